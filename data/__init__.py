"""bitnet_lab.data: this directory, shipped inside the package (see README.md here).

The build maps the package ``bitnet_lab.data`` onto the repository's top-level ``data/``
(pyproject.toml: package-dir, package-data), so an editable install and an installed wheel
both find these files with ``importlib.resources.files("bitnet_lab.data")``; use
``bitnet_lab.paths`` rather than this package directly.
"""
