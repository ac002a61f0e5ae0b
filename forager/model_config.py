"""Where a model is served and how to sample from it: :class:`ModelConfig`, the API root it names, the
proxy that reaches it and the API key from the environment."""

from __future__ import annotations

import ipaddress
import os
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from core.errors import ForagerError

#: Environment variables holding the API key, in the order they are consulted.
API_KEY_VARIABLES = ("FORAGER_API_KEY", "OPENAI_API_KEY")


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


def api_key_from_environment() -> str | None:
    return next((os.environ[name] for name in API_KEY_VARIABLES if os.environ.get(name)), None)
