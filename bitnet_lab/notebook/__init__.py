"""Notebook helpers: matplotlib figures (``viz``) and ipywidgets controls (``widgets``), imported lazily.
"""
