"""The store's own errors, derived from the ``ForagerError`` every user-facing failure derives from."""

from core.errors import ForagerError


class StoreError(ForagerError):
    """The database cannot be opened or refused an operation (unreachable, corrupt, locked, conflict)."""


class SchemaError(StoreError):
    """The database schema revision does not match this Forager: it needs an upgrade, or is too new."""
