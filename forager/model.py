"""The model client: chat completions from a served model over an OpenAI-compatible HTTP endpoint.

It speaks the ``/v1/chat/completions`` protocol that vLLM, SGLang, llama.cpp's server and OpenAI share,
plainly or, with :attr:`ModelConfig.stream`, as a stream of server-sent events assembled into the same
:class:`Completion` (:mod:`forager.chat_stream`). One :class:`ModelClient` owns one aiohttp session
and bounds how many requests it has in flight; each request is retried with tenacity when the failure
is one that repeating the same request can cure.

Every failure that reaches the caller is a :class:`~forager.model_errors.ModelError`, whose ``kind``
(listed in :mod:`forager.model_errors`) tells the agent what to do. :class:`ModelConfig`
(:mod:`forager.model_config`) says where the model is served and how to sample from it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from forager.chat_stream import StreamError, assemble
from forager.model_config import ModelConfig, api_key_from_environment, normalize_base_url, proxy_for
from forager.model_errors import (
    ModelError,
    Transient,
    excerpt,
    is_context_overflow,
    parse_retry_after,
    server_message,
    should_retry,
)
from forager.model_replies import Completion, completion_fields, model_entries, model_ids
from images.proxy import resolve_ca_bundle

# ModelConfig too: a caller configures and opens a client with one import.
__all__ = ["ModelClient", "ModelConfig"]

log = logging.getLogger(__name__)

#: The widest window of one exponential backoff wait, in seconds, whatever ``ModelConfig.backoff`` is.
MAX_BACKOFF = 60.0

#: Keys of a ``GET /models`` entry that give the served context window, in the order they are trusted.
_WINDOW_KEYS = ("max_model_len", "context_length", "context_window")

_T = TypeVar("_T")


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class ModelClient:
    """Chat completions from one served model; use as ``async with ModelClient(config) as client``.

    The session opens on entry (or on the first request) and closes on exit or :meth:`close`. A client
    belongs to the event loop that first used it.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.base_url = normalize_base_url(config.base_url)
        self._api_key = config.api_key if config.api_key is not None else api_key_from_environment()
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
        ids, _, _ = await self._call("GET", "/models", None, model_ids)
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
        entries, _, _ = await self._call("GET", "/models", None, model_entries)
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
        fields, latency, retries = await self._call("POST", "/chat/completions", body, completion_fields)
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
            assert isinstance(failure, Transient)  # the only exception the retry policy retries
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
            asked = failure.retry_after if isinstance(failure, Transient) else None
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
            retry=retry_if_exception_type(Transient),
            before_sleep=report,
        )

    async def _send(self, method: str, url: str, body: dict[str, Any] | None) -> tuple[Any, float]:
        """One attempt: the decoded JSON answer and its latency, or a :class:`Transient` or ModelError."""
        session = self._open()
        async with self._semaphore:
            started = time.monotonic()
            try:
                async with session.request(method, url, json=body, proxy=self._proxy) as response:
                    raw = await response.read()
            except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
                raise Transient("unavailable", f"no answer within {self.config.timeout:g} s") from exc
            except aiohttp.ClientError as exc:
                raise Transient("unavailable", f"{type(exc).__name__}: {exc}") from exc
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
            raise Transient(
                "bad_response",
                f"HTTP {response.status} with a body that is not JSON ({exc}): "
                f"{excerpt(raw.decode(errors='replace'))}",
            ) from exc

    def _assembled(self, url: str, raw: bytes) -> dict[str, Any]:
        """The chat completion a stream delivers, or the exception for a stream that does not deliver one."""
        try:
            return assemble(raw.decode(errors="replace"))
        except StreamError as exc:
            if exc.error is None:
                raise Transient("bad_response", f"HTTP 200 with a broken stream: {exc}") from exc
            # An error event mid-stream is the server's answer after all: judged as an error body is.
            code = exc.error.get("code")
            status = code if isinstance(code, int) and 400 <= code < 600 else 500
            error_body = json.dumps({"error": exc.error})
            raise self._refusal(url, status, None, error_body) from exc

    def _refusal(self, url: str, status: int, retry_after: str | None, body: str) -> Exception:
        """The exception for an HTTP error answer: a ModelError, or a Transient when it is worth a retry."""
        explanation = server_message(body)
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
            return Transient("unavailable", f"HTTP {status}: {explanation}", parse_retry_after(retry_after))
        if status == 404:
            advice = "check base_url and the model name (GET /models lists what the server serves)"
        else:
            advice = "change the request or the server's settings as the server's message says"
        return ModelError("bad_request", f"the model server rejected the request ({said}): {advice}")
