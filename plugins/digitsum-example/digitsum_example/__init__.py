"""An example digitsum plugin.

Its components reach digitsum only through the entry points in ``pyproject.toml``;
digitsum never imports this package unless a recipe or a listing asks for one of them.
"""

__version__ = "0.1.0"
