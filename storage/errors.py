"""The error type every user-facing Forager failure derives from, and the store's own errors.

They live in ``storage`` because ``storage`` is the bottom of the package order: every other Forager
package may import them, and it imports none of them.
"""


class ForagerError(Exception):
    """A failure the user can act on. Its message says what went wrong and what to do about it.

    The CLI prints the message on one line and exits non-zero; no traceback is shown.
    """

    exit_code: int = 1


class StoreError(ForagerError):
    """The database cannot be opened or refused an operation (unreachable, corrupt, locked, conflict)."""


class SchemaError(StoreError):
    """The database schema revision does not match this Forager: it needs an upgrade, or is too new."""
