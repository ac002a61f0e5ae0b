"""The viewer's web server (aiohttp): read-only pages over the store, safe to open on untrusted data.

Everything a page shows comes from models and repositories, so it is treated as hostile: templates are
autoescaped, and every response carries a Content-Security-Policy that allows scripts and styles only
from the viewer's own static files, so markup that slipped through could still not run a script. Only
GET and HEAD are routed: nothing can change the store.

Bound to a loopback address, the viewer answers requests whose ``Host`` is a loopback name only (a web
page cannot reach it through DNS rebinding). Bound elsewhere it requires a token: ``?token=`` once (it
is then kept in a cookie) or an ``Authorization: Bearer`` header.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core.errors import ForagerError
from forager.viewer import pages, trace_pages
from forager.viewer.params import ViewerError
from forager.viewer.render import Links, environment, static_dir
from storage import Store, StoreError

#: What a page may load: its own scripts, styles and images; no inline script, no plugin, no frame.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
TOKEN_COOKIE = "forager_view_token"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: How long a rendered dashboard is served again (it says when it was computed), and how many are kept.
DASHBOARD_SECONDS = 60.0
KEPT_PAGES = 64

STORE_KEY = web.AppKey("store", Store)
TOKEN_KEY = web.AppKey("token", str)
LOOPBACK_KEY = web.AppKey("loopback", bool)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_app(store: Store, *, token: str | None = None, loopback: bool = True) -> web.Application:
    """The viewer over ``store``. ``token``, when given, is required of every request; ``loopback`` says the
    server listens on a loopback address only (then requests must name a loopback host)."""
    app = web.Application(middlewares=[_guard])
    app[STORE_KEY] = store
    app[TOKEN_KEY] = token or ""
    app[LOOPBACK_KEY] = loopback
    env = environment()
    links = Links()

    def page(
        build: Callable[..., pages.Page], *args: Any, keep: float = 0.0
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler that builds and renders a page in a thread; with ``keep``, a rendered page is served
        again for that many seconds (for the dashboard, whose statistics read every selected episode)."""
        kept: dict[str, tuple[float, str]] = {}

        async def handler(request: web.Request) -> web.Response:
            names = [request.match_info[name] for name in args] if args else [request.query]

            def render() -> str:
                built = build(store, links, *names)
                return env.get_template(built.template).render(links=links, **built.context)

            hit = kept.get(request.path_qs)
            if hit is not None and time.monotonic() - hit[0] < keep:
                html = hit[1]
            else:
                try:
                    html = await asyncio.to_thread(render)
                except ViewerError as exc:
                    return _error(env, links, exc.status, str(exc))
                except StoreError as exc:
                    return _error(env, links, 503, str(exc))
                if keep:
                    if len(kept) >= KEPT_PAGES:
                        kept.clear()
                    kept[request.path_qs] = (time.monotonic(), html)
            return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

        return handler

    app.router.add_get("/", page(pages.dashboard, keep=DASHBOARD_SECONDS))
    app.router.add_get("/episodes", page(pages.episodes))
    app.router.add_get("/episodes/{id}", page(pages.episode, "id"))
    app.router.add_get("/compare", page(pages.compare))
    app.router.add_get("/tasks", page(pages.tasks))
    app.router.add_get("/tasks/{id}", page(pages.task, "id"))
    app.router.add_get("/images", page(pages.images))
    app.router.add_get("/images/{id}", page(pages.image, "id"))
    app.router.add_get("/traces", page(trace_pages.traces))
    app.router.add_get("/traces/{id}", page(trace_pages.trace, "id"))
    app.router.add_static("/static", static_dir())
    app.on_response_prepare.append(_secure)

    async def not_found(request: web.Request) -> web.Response:
        return _error(env, links, 404, f"no page at {request.path}")

    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


def _error(env: Any, links: Links, status: int, message: str) -> web.Response:
    html = env.get_template("error.html").render(links=links, status=status, message=message)
    return web.Response(text=html, status=status, content_type="text/html")


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response, static files and errors included."""
    response.headers.update(SECURITY_HEADERS)


@web.middleware
async def _guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Only GET and HEAD; the token when one is set; a loopback ``Host`` when listening on loopback."""
    if request.method not in ("GET", "HEAD"):
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], text="the viewer is read-only")
    token = request.app[TOKEN_KEY]
    if request.app[LOOPBACK_KEY] and not token:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        if host.strip("[]").lower() not in LOOPBACK_NAMES:
            raise web.HTTPMisdirectedRequest(text=f"this viewer answers requests to localhost, not {host}")
    if token:
        given = request.query.get("token")
        if given is not None and hmac.compare_digest(given.encode(), token.encode()):
            # Keep the token in a cookie and drop it from the address bar (and from shared links).
            query = {key: value for key, value in request.query.items() if key != "token"}
            response = web.HTTPFound(request.rel_url.with_query(query))
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            raise response
        header = request.headers.get("Authorization", "")
        supplied = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
        supplied = supplied or request.cookies.get(TOKEN_COOKIE, "")
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            raise web.HTTPUnauthorized(
                text="this viewer needs its token: open the address `forager view` printed (with ?token=)"
            )
    return await handler(request)


def serve(
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the viewer until interrupted; ``on_ready`` is called once it listens. Refuses a non-loopback
    ``host`` without a token: the store's trajectories, prompts and patches would be open to the network."""
    loopback = is_loopback(host)
    if not loopback and not token:
        raise ForagerError(
            f"binding {host} would open the store to the network: pass --token (or bind 127.0.0.1)"
        )
    app = make_app(store, token=token, loopback=loopback)
    try:
        web.run_app(app, host=host, port=port, print=lambda _banner: on_ready and on_ready())
    except OSError as exc:
        raise ForagerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}: pick another --port"
        ) from exc
