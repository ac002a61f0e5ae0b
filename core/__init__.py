"""What every Forager package shares: the base error type and the progress interface.

``core`` imports nothing of Forager, so every package — ``storage`` at the bottom of the order included —
may import it.
"""

from core.errors import ForagerError
from core.progress import Progress, ProgressEvent, no_progress

__all__ = ["ForagerError", "Progress", "ProgressEvent", "no_progress"]
