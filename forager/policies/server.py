"""The HTTP server every policy shares: a policy served as an OpenAI-compatible model over aiohttp.

:func:`policy_app` serves a :data:`~forager.policies.conversation.Policy` as the model ``name``:

- ``GET /v1/models`` lists it and ``GET /v1/models/{id}`` describes it;
- ``POST /v1/chat/completions`` answers with a ``chat.completion``, or with ``chat.completion.chunk``
  server-sent events ending in ``data: [DONE]`` when ``stream`` is true. The action's format follows
  the request: an offered tool is called as ``tool_calls`` (the thought as ``content``); without one
  (or with ``tool_choice: "none"``) the content holds the thought and the call as a CWM block. ``n``,
  ``max_tokens`` / ``max_completion_tokens`` and ``tool_choice`` are honoured
  (:mod:`forager.policies.protocol`).

Every error is OpenAI's JSON body ``{"error": {"message", "type", "param", "code"}}``: 400 for a
malformed request or a conversation the policy cannot answer (no task named, an unknown task: the
message says why), 404 ``model_not_found`` for another model's name, 404/405 for an unknown route.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable

from aiohttp import web

from forager.policies.conversation import Policy, PolicyError
from forager.policies.protocol import (
    RequestError,
    chunks,
    completion,
    make_choice,
    prompt_tokens,
    read_request,
)

log = logging.getLogger(__name__)

#: Largest request body accepted, in bytes: a long episode's conversation is megabytes of observations.
MAX_REQUEST_BYTES = 256 * 1024**2

_ROUTES = "GET /v1/models, GET /v1/models/{id} and POST /v1/chat/completions"


@web.middleware
async def _openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure as OpenAI's error body, whatever raised it."""
    try:
        return await handler(request)
    except RequestError as exc:
        return exc.response()
    except PolicyError as exc:
        return RequestError(str(exc)).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status in (404, 405):
            message = f"no route {request.method} {request.path}: this server answers {_ROUTES}"
        else:
            message = f"{exc.reason}: {exc.text}" if exc.text else exc.reason
        return RequestError(message, status=exc.status).response()
    except Exception:
        log.exception("policy server failed on %s %s", request.method, request.path)
        message = "the policy server failed on this request: its log has the traceback"
        return RequestError(message, status=500, kind="server_error").response()


def policy_app(name: str, policy: Policy) -> web.Application:
    """An aiohttp application serving ``policy`` as the model ``name`` (see the module docstring)."""
    model = {"id": name, "object": "model", "created": 0, "owned_by": "forager"}

    def unknown(asked: str) -> RequestError:
        return RequestError(
            f"the model {asked!r} does not exist: this server serves the policy {name!r} (GET /v1/models)",
            status=404,
            param="model",
            code="model_not_found",
        )

    async def models(_request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [model]})

    async def one_model(request: web.Request) -> web.Response:
        if request.match_info["model"] != name:
            raise unknown(request.match_info["model"])
        return web.json_response(model)

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:  # also a body that is not UTF-8
            raise RequestError(
                "the request body is not JSON: send a chat completion request as a JSON object"
            ) from None
        chat = read_request(body)
        if chat.model != name:
            raise unknown(chat.model)
        # The policy may block (the oracle reads the store): off the event loop, so that concurrent
        # episodes are not served one at a time. It decides once; the n choices are that decision.
        action = await asyncio.to_thread(policy, chat.messages)
        choices = [make_choice(action, chat) for _ in range(chat.n)]
        prompt = prompt_tokens(chat.messages)
        if not chat.stream:
            return web.json_response(completion(name, choices, prompt))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        # The answer is whole already: its events go out in one write, not one system call each.
        events = [
            f"data: {json.dumps(chunk)}\n\n" for chunk in chunks(name, choices, prompt, chat.include_usage)
        ]
        try:
            await response.write("".join([*events, "data: [DONE]\n\n"]).encode())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client hung up mid-stream: no one is left to answer
        return response

    app = web.Application(middlewares=[_openai_errors], client_max_size=MAX_REQUEST_BYTES)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", one_model)
    app.router.add_post("/v1/chat/completions", completions)
    return app


# ---- running a server --------------------------------------------------------------------------------


def serve(app: web.Application, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` on ``host``:``port`` until interrupted (Ctrl-C). Clients use ``http://HOST:PORT/v1``."""
    web.run_app(app, host=host, port=port)


def start_in_thread(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` from a background thread: (its OpenAI base URL ``http://HOST:PORT/v1``, ``stop``).

    ``port`` 0 takes a free port. ``stop()`` closes the server and ends the thread; call it once. An error
    binding the address is raised here.
    """
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner.addresses[0][1]

    async def shut_down() -> None:
        await runner.cleanup()
        # Policies run in the loop's default executor: its threads must end before the loop closes.
        await loop.shutdown_default_executor()

    thread = threading.Thread(target=loop.run_forever, name="policy-server", daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(shut_down(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    try:
        bound = asyncio.run_coroutine_threadsafe(start(), loop).result()
    except BaseException:
        stop()
        raise
    address = f"[{host}]" if ":" in host else host
    return f"http://{address}:{bound}/v1", stop
