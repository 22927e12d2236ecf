"""The version of radref (one place; pyproject.toml reads it)."""
__version__ = "0.2.0"
#: The release that removes what radref 0.2 deprecated: radref 0.1's module
#: paths (``radref.slopes``, ...) and ``fit(X, steps=...)``.
REMOVED_IN = "radref 0.4"
