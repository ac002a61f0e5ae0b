"""How the model client tells failures apart: :class:`ModelError`, and which HTTP errors are worth a retry.

Every failure that reaches the caller is a :class:`ModelError`, whose ``kind`` tells the agent what to do:

- ``context_overflow``: the conversation no longer fits the model's context window (an error naming the
  window, whatever its status, or HTTP 413). Never retried: the same request would fail again; the
  episode must end or shrink.
- ``auth``: HTTP 401/403. Never retried.
- ``bad_request``: any other 4xx; the message carries the server's own explanation. Never retried.
- ``unavailable``: connection errors, timeouts and HTTP 408/409/429/5xx that outlasted every retry.
- ``bad_response``: answers that were not a chat completion (malformed or truncated JSON, a stream cut
  before its end) through every retry, or a server that lists no model to use.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from core.errors import ForagerError

#: The longest wait a server's ``Retry-After`` can impose on one retry, in seconds.
MAX_RETRY_AFTER = 60.0
#: Statuses below 500 that a later identical request may get past: timeout, conflict, rate limit.
RETRYABLE_STATUSES = frozenset({408, 409, 429})

ErrorKind = Literal["context_overflow", "auth", "unavailable", "bad_request", "bad_response"]

# How servers say a request does not fit the context window. Matched anywhere in the error body, so an
# error code (OpenAI's ``context_length_exceeded``, llama.cpp's ``exceed_context_size_error``) counts too.
_CONTEXT_OVERFLOW = re.compile(
    "|".join(
        re.escape(phrase)
        for phrase in (
            "maximum context length",  # vLLM, older OpenAI, SGLang ("… the model's maximum context length")
            "context_length_exceeded",  # OpenAI's error code
            "exceeds the context window",  # OpenAI
            "exceeds the available context size",  # llama.cpp
            "exceed_context_size_error",  # llama.cpp's error type
            "longer than the model's context length",  # SGLang, older releases
            "exceeds the maximum allowed length",  # SGLang: "Input length (N tokens) exceeds the maximum …"
        )
    ),
    re.IGNORECASE,
)


class ModelError(ForagerError):
    """The model server could not give a completion; ``kind`` says why (see the module docstring)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class Transient(Exception):
    """A failed attempt that the same request may get past; ``kind`` is what it becomes when none is left."""

    def __init__(self, kind: ErrorKind, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.kind: ErrorKind = kind
        self.retry_after = retry_after


def is_context_overflow(status: int, body: str) -> bool:
    """Whether an HTTP error says the request does not fit the model's context window."""
    return status == 413 or (status >= 400 and _CONTEXT_OVERFLOW.search(body) is not None)


def should_retry(status: int, body: str) -> bool:
    """Whether an HTTP error response (status ≥ 400, its body) is worth sending the same request again.

    Yes for timeouts, conflicts, rate limits and server errors; no for a context overflow, whatever
    its status, since the same request cannot fit next time either; no for any other client error.
    """
    if is_context_overflow(status, body):
        return False
    return status in RETRYABLE_STATUSES or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay seconds or an HTTP date), at most 60.

    None when the header is absent or unreadable; a date in the past gives 0. ``now`` (timezone-aware)
    defaults to the current time.
    """
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        # HTTP dates are always GMT; a date without a zone ("-0000") is read that way too.
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def excerpt(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty body)"
    return flat if len(flat) <= limit else f"{flat[:limit]}…"


def server_message(body: str) -> str:
    """The explanation in an error body: OpenAI's and llama.cpp's ``error.message``, vLLM's and SGLang's
    top-level ``message``, FastAPI's ``detail``; else the body itself, shortened."""
    try:
        data = json.loads(body)
    except ValueError:
        return excerpt(body)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return excerpt(error["message"])
        for candidate in (error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str):
                return excerpt(candidate)
    return excerpt(body)
