"""The error type every user-facing Forager failure derives from."""


class ForagerError(Exception):
    """A failure the user can act on. Its message says what went wrong and what to do about it.

    The CLI prints the message on one line and exits non-zero; no traceback is shown.
    """

    exit_code: int = 1
