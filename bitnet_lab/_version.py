"""The package's version, in a module of its own so that any layer can read it without importing
the package's top (the facade over every layer)."""

__version__ = "0.1.0"
