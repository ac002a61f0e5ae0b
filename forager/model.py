"""The model client: chat completions from a served model over an OpenAI-compatible HTTP endpoint.

It speaks the ``/v1/chat/completions`` protocol that vLLM, SGLang, llama.cpp's server and OpenAI share,
plainly or, with :attr:`ModelConfig.stream`, as a stream of server-sent events assembled into the same
:class:`Completion` (:mod:`forager.chat_stream`). One :class:`ModelClient` owns one aiohttp session
and bounds how many requests it has in flight; each request is retried with tenacity when the failure
is one that repeating the same request can cure.

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

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import ssl
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from core.errors import ForagerError
from forager.chat_stream import StreamError, assemble
from images.proxy import resolve_ca_bundle

log = logging.getLogger(__name__)

#: Environment variables holding the API key, in the order they are consulted.
API_KEY_VARIABLES = ("FORAGER_API_KEY", "OPENAI_API_KEY")
#: The longest wait a server's ``Retry-After`` can impose on one retry, in seconds.
MAX_RETRY_AFTER = 60.0
#: The widest window of one exponential backoff wait, in seconds, whatever ``ModelConfig.backoff`` is.
MAX_BACKOFF = 60.0
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

#: Keys of a ``GET /models`` entry that give the served context window, in the order they are trusted.
_WINDOW_KEYS = ("max_model_len", "context_length", "context_window")

_T = TypeVar("_T")


@dataclass(frozen=True)
class ModelConfig:
    """Where the model is served and how to sample from it."""

    base_url: str
    """The API root, e.g. ``http://127.0.0.1:8000/v1``; see :func:`normalize_base_url`."""
    model: str | None = None
    """The model id to request; None: the first id the server lists at ``GET /models``."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer``; None: ``$FORAGER_API_KEY``, else ``$OPENAI_API_KEY``, else none."""
    temperature: float | None = None
    """Sampling parameters are sent only when set; unset ones take the server's defaults."""
    top_p: float | None = None
    max_tokens: int | None = None
    """Most tokens one completion may generate, unless the request names its own cap (the agent does)."""
    token_cap_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    """The request field carrying the cap: ``max_tokens`` is understood by vLLM, SGLang, llama.cpp and
    OpenAI's older models; OpenAI's reasoning models accept only ``max_completion_tokens``."""
    context_window: int | None = None
    """The model's context window in tokens, if known; None: asked of the server
    (:meth:`ModelClient.context_window`)."""
    seed: int | None = None
    timeout: float = 600.0
    """Seconds one request may take, from connecting to the last byte of the answer."""
    max_retries: int = 6
    """Retries after the first attempt, for the failures that repeating can cure."""
    concurrency: int = 32
    """Requests one client has in flight at once; more wait their turn (a backoff wait holds no turn)."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Merged into every chat request last, so it can add server extras (vLLM's ``top_k``,
    ``chat_template_kwargs``) and override anything above (``tool_choice``)."""
    ca_bundle: Path | None = None
    """PEM file of the authorities to trust for an ``https`` server (a TLS-intercepting proxy's among
    them); None: the first of ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``PIP_CERT`` naming a file, else
    the system's bundle."""
    stream: bool = False
    """Ask for the answer as a stream (server-sent events, with a final usage chunk) and assemble it.
    A long generation then keeps its connection busy, so a proxy that cuts idle connections does not
    cut it; a stream cut mid-way is retried like a truncated answer. ``timeout`` still bounds the
    whole answer."""
    backoff: float = 1.0
    """Seconds scaling the exponential backoff: retry n waits a random time up to ``backoff * 2**(n-1)``
    (full jitter, at most 60 s), or longer when the server's ``Retry-After`` says so."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ForagerError(
                f"invalid model settings (concurrency={self.concurrency}, max_retries={self.max_retries}, "
                f"timeout={self.timeout}, backoff={self.backoff}): concurrency must be at least 1, "
                "max_retries and backoff at least 0, and timeout positive"
            )


@dataclass(frozen=True)
class Completion:
    """One chat completion: the first choice of the server's answer."""

    content: str | None
    tool_calls: list[dict[str, Any]]
    """The message's raw OpenAI ``tool_calls``, arguments still JSON text; [] if none."""
    reasoning: str | None
    """The message's ``reasoning_content`` (vLLM, SGLang, DeepSeek) or ``reasoning``, if present."""
    finish_reason: str | None
    prompt_tokens: int
    """From the answer's ``usage``; 0 when the server reports none."""
    completion_tokens: int
    latency: float
    """Seconds the successful request took (waiting for a slot and retries excluded)."""
    retries: int
    """How many failed attempts preceded the successful one."""
    message: dict[str, Any]
    """The raw assistant message, to append to the conversation as is."""


class ModelError(ForagerError):
    """The model server could not give a completion; ``kind`` says why (see the module docstring)."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class _Transient(Exception):
    """A failed attempt that the same request may get past; ``kind`` is what it becomes when none is left."""

    def __init__(self, kind: ErrorKind, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.kind: ErrorKind = kind
        self.retry_after = retry_after


def proxy_for(url: str) -> str | None:
    """The proxy to reach ``url`` through: ``HTTP_PROXY``/``HTTPS_PROXY`` unless ``NO_PROXY`` exempts it.

    A server on this machine is always reached directly, even when ``NO_PROXY`` forgets localhost:
    a corporate proxy cannot reach the vLLM next to it.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, not an address
        loopback = False
    if loopback or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def normalize_base_url(url: str) -> str:
    """The API root for ``url``, without a trailing slash.

    A bare server address (no path) gets ``/v1``, so ``http://127.0.0.1:8000`` and
    ``http://127.0.0.1:8000/v1`` are the same. A URL with a path is used as given: some servers mount
    the API elsewhere (``…/v1beta/openai``), and appending ``/v1`` there would break it.
    """
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ForagerError(
            f"model base URL {url!r} is not an http(s) URL: pass the server's API root, "
            "e.g. http://127.0.0.1:8000/v1"
        )
    return url if parts.path else f"{url}/v1"


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


def _api_key_from_environment() -> str | None:
    return next((os.environ[name] for name in API_KEY_VARIABLES if os.environ.get(name)), None)


def _excerpt(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    if not flat:
        return "(empty body)"
    return flat if len(flat) <= limit else f"{flat[:limit]}…"


def _server_message(body: str) -> str:
    """The explanation in an error body: OpenAI's and llama.cpp's ``error.message``, vLLM's and SGLang's
    top-level ``message``, FastAPI's ``detail``; else the body itself, shortened."""
    try:
        data = json.loads(body)
    except ValueError:
        return _excerpt(body)
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return _excerpt(error["message"])
        for candidate in (error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str):
                return _excerpt(candidate)
    return _excerpt(body)


def _model_entries(data: Any) -> list[dict[str, Any]]:
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("id"), str) for entry in entries
    ):
        raise _Transient("bad_response", f"the body is not a model list: {_excerpt(json.dumps(data))}")
    return entries


def _model_ids(data: Any) -> list[str]:
    return [entry["id"] for entry in _model_entries(data)]


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _count(value: Any) -> int:
    # Token counts are bookkeeping: a server reporting none, or nonsense, must not cost the completion.
    return value if isinstance(value, int) and value >= 0 else 0


def _completion_fields(data: Any) -> dict[str, Any]:
    """The fields of a :class:`Completion` read from a chat completion body, all but the timing."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    tool_calls = (message.get("tool_calls") or []) if isinstance(message, dict) else None
    if not isinstance(message, dict) or not isinstance(tool_calls, list):
        raise _Transient("bad_response", f"the body is not a chat completion: {_excerpt(json.dumps(data))}")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return {
        "content": message.get("content"),
        "tool_calls": tool_calls,
        "reasoning": message.get("reasoning_content") or message.get("reasoning"),
        "finish_reason": choice.get("finish_reason"),
        "prompt_tokens": _count(usage.get("prompt_tokens")),
        "completion_tokens": _count(usage.get("completion_tokens")),
        "message": message,
    }


class ModelClient:
    """Chat completions from one served model; use as ``async with ModelClient(config) as client``.

    The session opens on entry (or on the first request) and closes on exit or :meth:`close`. A client
    belongs to the event loop that first used it.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.base_url = normalize_base_url(config.base_url)
        self._api_key = config.api_key if config.api_key is not None else _api_key_from_environment()
        self._proxy = proxy_for(self.base_url)
        self._ssl = self._tls()
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._model = config.model
        self._model_lock = asyncio.Lock()
        self._window: int | None = config.context_window
        self._window_asked = config.context_window is not None

    async def __aenter__(self) -> ModelClient:
        self._open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session; a later request opens a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def models(self) -> list[str]:
        """The model ids the server lists at ``GET /models``; answering at all makes it a health check."""
        ids, _, _ = await self._call("GET", "/models", None, _model_ids)
        return ids

    async def context_window(self) -> int | None:
        """The served model's context window in tokens, as configured or as the server says; None if
        it says nothing. Asked once per client.

        Read from the model's entry at ``GET /models`` (``max_model_len``: vLLM, SGLang;
        ``context_length``/``context_window``: other OpenAI-compatible servers), else from llama.cpp's
        ``GET /props`` (``default_generation_settings.n_ctx``, the window it was started with; its
        ``/models`` only says the training length).
        """
        async with self._model_lock:
            if self._window_asked:
                return self._window
        model = await self._resolve_model()
        entries, _, _ = await self._call("GET", "/models", None, _model_entries)
        entry = next((e for e in entries if e.get("id") == model), entries[0] if entries else {})
        window = next((entry[key] for key in _WINDOW_KEYS if _positive(entry.get(key))), None)
        if window is None:
            root = self.base_url.removesuffix("/v1")
            try:
                props, _, _ = await self._call("GET", "/props", None, lambda data: data, base=root)
            except ModelError:  # not llama.cpp: the server does not say
                props = None
            if isinstance(props, dict):
                settings = props.get("default_generation_settings")
                found = settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx")
                window = found if _positive(found) else None
        async with self._model_lock:
            self._window, self._window_asked = window, True
        return window

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        max_tokens: int | None = None,
    ) -> Completion:
        """The model's next message after ``messages``, offered ``tools`` (OpenAI function schemas) if any,
        generating at most ``max_tokens`` tokens (default: ``ModelConfig.max_tokens``).

        A message with neither content nor tool calls is a valid, empty completion; one cut at the cap
        has ``finish_reason`` ``length``. Raises :class:`ModelError` when no completion can be had.
        """
        body = self._chat_body(await self._resolve_model(), messages, tools)
        cap = max_tokens if max_tokens is not None else self.config.max_tokens
        if cap is not None:
            body.setdefault(self.config.token_cap_field, cap)
        fields, latency, retries = await self._call("POST", "/chat/completions", body, _completion_fields)
        return Completion(**fields, latency=latency, retries=retries)

    def _chat_body(
        self, model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        config = self.config
        body: dict[str, Any] = {"model": model, "messages": messages}
        sampling = {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "seed": config.seed,
        }
        body.update((name, value) for name, value in sampling.items() if value is not None)
        # Some servers reject an empty tool list, so no tools means no tool fields at all.
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        if config.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(config.extra_body)
        return body

    async def _resolve_model(self) -> str:
        # The lock makes concurrent first requests share one GET /models.
        async with self._model_lock:
            if self._model is None:
                served = await self.models()
                if not served:
                    raise ModelError(
                        "bad_response",
                        f"{self.base_url}/models lists no model: load one in the server, "
                        "or name the model to use in ModelConfig.model",
                    )
                self._model = served[0]
        return self._model

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                # As many connections as requests in flight: a request never queues for a connection,
                # which would eat into its timeout.
                connector=aiohttp.TCPConnector(limit=self.config.concurrency, ssl=self._ssl),
            )
        return self._session

    def _tls(self) -> ssl.SSLContext | bool:
        if not self.base_url.startswith("https:"):
            return True  # aiohttp's default; no context to build
        return ssl.create_default_context(cafile=resolve_ca_bundle(self.config.ca_bundle))

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        parse: Callable[[Any], _T],
        *,
        base: str | None = None,
    ) -> tuple[_T, float, int]:
        """``parse`` of the JSON answer to one request (to ``base``, default the API root, plus
        ``path``), its latency and how many retries it took."""
        url = (base or self.base_url) + path
        try:
            async for attempt in self._retrying(url):
                with attempt:
                    data, latency = await self._send(method, url, body)
                    value = parse(data)
        except RetryError as exhausted:
            last = exhausted.last_attempt
            failure = last.exception()
            assert isinstance(failure, _Transient)  # the only exception the retry policy retries
            if failure.kind == "bad_response":
                advice = "check the server's log, and that base_url is an OpenAI-compatible API root"
            else:
                advice = "check that the server is running and reachable, or raise max_retries or timeout"
            raise ModelError(
                failure.kind, f"{method} {url} failed {last.attempt_number} times (last: {failure}): {advice}"
            ) from failure
        return value, latency, attempt.retry_state.attempt_number - 1

    def _retrying(self, url: str) -> AsyncRetrying:
        jitter = wait_random_exponential(multiplier=self.config.backoff, max=MAX_BACKOFF)

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            asked = failure.retry_after if isinstance(failure, _Transient) else None
            return max(asked or 0.0, jitter(state))

        def report(state: RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "model request to %s failed (%s); retry %d in %.1f s",
                url,
                failure,
                state.attempt_number,
                delay,
            )

        return AsyncRetrying(
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=wait,
            retry=retry_if_exception_type(_Transient),
            before_sleep=report,
        )

    async def _send(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[Any, float]:
        """One attempt: the decoded JSON answer and its latency, or a :class:`_Transient` or ModelError."""
        session = self._open()
        async with self._semaphore:
            started = time.monotonic()
            try:
                async with session.request(method, url, json=body, proxy=self._proxy) as response:
                    raw = await response.read()
            except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
                raise _Transient("unavailable", f"no answer within {self.config.timeout:g} s") from exc
            except aiohttp.ClientError as exc:
                raise _Transient("unavailable", f"{type(exc).__name__}: {exc}") from exc
            latency = time.monotonic() - started
        if response.status >= 400:
            raise self._refusal(
                url, response.status, response.headers.get("Retry-After"), raw.decode(errors="replace")
            )
        if response.content_type == "text/event-stream":
            return self._assembled(url, raw), latency
        try:
            return json.loads(raw), latency
        except ValueError as exc:  # also a body that is not UTF-8
            raise _Transient(
                "bad_response",
                f"HTTP {response.status} with a body that is not JSON ({exc}): "
                f"{_excerpt(raw.decode(errors='replace'))}",
            ) from exc

    def _assembled(self, url: str, raw: bytes) -> dict[str, Any]:
        """The chat completion a stream delivers, or the exception for a stream that does not deliver one."""
        try:
            return assemble(raw.decode(errors="replace"))
        except StreamError as exc:
            if exc.error is None:
                raise _Transient("bad_response", f"HTTP 200 with a broken stream: {exc}") from exc
            # An error event mid-stream is the server's answer after all: judged as an error body is.
            code = exc.error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            error_body = json.dumps({"error": exc.error})
            raise self._refusal(url, status, None, error_body) from exc

    def _refusal(self, url: str, status: int, retry_after: str | None, body: str) -> Exception:
        """The exception for an HTTP error answer: a ModelError, or a _Transient when it is worth a retry."""
        explanation = _server_message(body)
        said = f"HTTP {status} from {url}: {explanation}"
        if is_context_overflow(status, body):
            return ModelError(
                "context_overflow",
                f"the conversation does not fit the model's context window ({said}): shorten it, lower "
                "max_tokens, or serve the model with a longer context",
            )
        if status in (401, 403):
            sent = "the API key it was sent" if self._api_key else "the request, which carried no API key"
            return ModelError(
                "auth",
                f"the model server refused {sent} ({said}): set FORAGER_API_KEY or OPENAI_API_KEY "
                "(or ModelConfig.api_key) to a key it accepts",
            )
        if should_retry(status, body):
            # The exhausted-retries message names the URL already.
            return _Transient("unavailable", f"HTTP {status}: {explanation}", parse_retry_after(retry_after))
        if status == 404:
            advice = "check base_url and the model name (GET /models lists what the server serves)"
        else:
            advice = "change the request or the server's settings as the server's message says"
        return ModelError("bad_request", f"the model server rejected the request ({said}): {advice}")
