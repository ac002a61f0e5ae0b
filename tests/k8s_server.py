"""A Kubernetes API server for tests: the pods API and pod exec, backed by real Docker containers.

It implements the part of the core/v1 REST API that ``envs.kubernetes_backend`` uses — pods create, get,
list and watch (label and field selectors), delete, namespaced, with the phases Pending → Running →
Succeeded/Failed and ``activeDeadlineSeconds`` enforced — and pod exec over the real websocket
subprotocol ``v4.channel.k8s.io``: each binary message starts with its channel byte (0 stdin, 1 stdout,
2 stderr, 3 error), and the error channel carries the ``Status`` with the exit code when the process ends.

A pod is a container started with the lockdown its spec asks for (capabilities, no new privileges,
memory and CPU limits) and no network; the node's pid limit (the kubelet's ``podPidsLimit``) is the
server's ``pod_pids_limit``; an init process reaps zombies as the pause container does under
``shareProcessNamespace``. An exec is a ``docker exec`` whose hijacked socket is relayed to the
websocket. So the official client, its websocket stream and real processes are exercised; what is not
(scheduling, image pulls, kubelet and CNI behaviour) needs a real cluster (see the README).

Clients authenticate with a bearer token (``kubeconfig`` writes one that this server accepts).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import ssl
import struct
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import yaml
from aiohttp import WSMsgType, web
from docker.errors import DockerException, ImageNotFound, NotFound

from images.engine import owner_labels

#: The label on every container this server starts (its value: the server's id).
SERVER_LABEL = "forager.test-k8s-server"
#: The label on a pod's container naming the pod ("namespace/name").
POD_LABEL = "forager.test-k8s-pod"
_EXEC_PROTOCOL = "v4.channel.k8s.io"


class K8sTestServer:
    """The server, running on its own event loop in a thread. ``start()``, then ``stop()``."""

    def __init__(
        self, docker_client: docker.DockerClient, *, pod_pids_limit: int = 512, tls_dir: Path | None = None
    ) -> None:
        """``tls_dir``: serve HTTPS with a self-signed certificate for 127.0.0.1 made there."""
        self.docker = docker_client
        self.pod_pids_limit = pod_pids_limit
        self.tls_dir = tls_dir
        self.id = secrets.token_hex(4)
        self.token = secrets.token_hex(16)
        self.url = ""
        self.kubeconfig_path: Path | None = None
        #: Seconds an exec handshake is held before it is answered (a hung kubelet, in drills).
        self.exec_delay = 0.0
        #: Statuses (429, 500...) to answer the next REST requests with, in order, before serving them.
        self.fail_next: list[int] = []
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self._containers: dict[tuple[str, str], str] = {}
        self._versions = itertools.count(1)
        self._watchers: set[asyncio.Queue] = set()
        self._execs: dict[web.WebSocketResponse, asyncio.BaseTransport | None] = {}
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="k8s-test-server")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="k8s-test-server")
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()

    # -- control, from the test's thread --------------------------------------------------------

    def start(self) -> K8sTestServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(30)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def drop_exec_streams(self) -> int:
        """Cut every open exec connection (as a restarted API server or an idle timeout does)."""
        return asyncio.run_coroutine_threadsafe(self._drop_execs(), self._loop).result(10)

    def container_of(self, namespace: str, name: str) -> str | None:
        """The id of the container behind a pod."""
        return self._containers.get((namespace, name))

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server to ``path``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, **self._authority()}}],
            "users": [{"name": "test", "user": {"token": self.token}}],
            "contexts": [
                {"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}
            ],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        self.kubeconfig_path = path
        return path

    # -- lifecycle --------------------------------------------------------------------------------

    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._authenticate])
        base = "/api/v1/namespaces/{namespace}/pods"
        app.router.add_get(base, self._list)
        app.router.add_post(base, self._create)
        app.router.add_get(base + "/{name}", self._read)
        app.router.add_delete(base + "/{name}", self._delete)
        app.router.add_get(base + "/{name}/exec", self._exec)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._tls_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if self.tls_dir else 'http'}://127.0.0.1:{port}"
        self._spawn(self._reap())

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_dir is None:
            return None
        cert, key = self.tls_dir / "server.crt", self.tls_dir / "server.key"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return context

    def _authority(self) -> dict[str, str]:
        return {"certificate-authority": str(self.tls_dir / "server.crt")} if self.tls_dir else {}

    async def _shutdown(self) -> None:
        await self._drop_execs()
        for task in list(self._tasks):
            task.cancel()
        for key in list(self.pods):
            await self._remove(key)
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, coroutine: Any) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _docker(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._loop.run_in_executor(self._pool, lambda: call(*args, **kwargs))

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        # The scheme is case-insensitive (RFC 7235): in-cluster configuration sends "bearer".
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token != self.token:
            return _status(401, "Unauthorized", "Unauthorized")
        if self.fail_next and not request.path.endswith("/exec"):
            code = self.fail_next.pop(0)
            return _status(code, "TooManyRequests" if code == 429 else "InternalError", "injected failure")
        return await handler(request)

    # -- pods -------------------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        pod = await request.json()
        metadata = pod.setdefault("metadata", {})
        name = metadata.get("name")
        if not name:
            return _status(422, "Invalid", "metadata.name: Required value")
        if (namespace, name) in self.pods:
            return _status(409, "AlreadyExists", f'pods "{name}" already exists', name)
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            labels=metadata.get("labels") or {},
        )
        pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}
        self._store((namespace, name), pod, "ADDED")
        self._spawn(self._run_pod((namespace, name)))
        return web.json_response(pod, status=201)

    async def _read(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["namespace"], request.match_info["name"]))
        if pod is None:
            return _not_found(request.match_info["name"])
        return web.json_response(pod)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        matches = _selector(request.query.get("labelSelector", ""), request.query.get("fieldSelector", ""))

        def selected() -> list[dict]:
            return [pod for (ns, _), pod in self.pods.items() if ns == namespace and matches(pod)]

        if request.query.get("watch") not in ("true", "True", "1"):
            version = str(next(self._versions))
            return web.json_response(
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": version},
                    "items": selected(),
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.add(queue)
        try:
            for pod in selected():  # no resourceVersion: the current state first, as ADDED events
                await response.write(_event("ADDED", pod))
            deadline = time.monotonic() + float(request.query.get("timeoutSeconds", 1800))
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    kind, pod = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
                if pod["metadata"]["namespace"] == namespace and matches(pod):
                    await response.write(_event(kind, pod))
        except ConnectionResetError:
            pass  # the client went away
        finally:
            self._watchers.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _delete(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        pod = self.pods.get(key)
        if pod is None:
            return _not_found(key[1])
        pod["metadata"]["deletionTimestamp"] = _now()
        await self._remove(key)
        return web.json_response(pod)

    def _store(self, key: tuple[str, str], pod: dict, kind: str) -> None:
        pod["metadata"]["resourceVersion"] = str(next(self._versions))
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        for queue in self._watchers:
            queue.put_nowait((kind, json.loads(json.dumps(pod))))

    async def _remove(self, key: tuple[str, str]) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        self._store(key, pod, "DELETED")
        container = self._containers.pop(key, None)
        if container is not None:
            with contextlib.suppress(NotFound):
                await self._docker(self.docker.api.remove_container, container, force=True)

    async def _run_pod(self, key: tuple[str, str]) -> None:
        """Create and start the pod's container, then enforce its deadline."""
        pod = self.pods[key]
        spec = pod["spec"]
        container_spec = spec["containers"][0]
        try:
            container = await self._docker(self._create_container, key, pod)
        except ImageNotFound as exc:
            self._set_status(key, "Pending", waiting={"reason": "ErrImagePull", "message": str(exc)})
            return
        except DockerException as exc:
            self._set_status(key, "Failed", message=str(exc))
            return
        if key not in self.pods:  # deleted while its container was being made
            await self._docker(self.docker.api.remove_container, container, force=True)
            return
        self._containers[key] = container
        try:
            await self._docker(self.docker.api.start, container)
        except DockerException as exc:
            self._set_status(key, "Failed", message=str(exc))
            return
        started = _now()
        self._set_status(key, "Running", running={"startedAt": started}, name=container_spec["name"])
        self.pods[key]["status"]["startTime"] = started
        deadline = spec.get("activeDeadlineSeconds")
        if deadline:
            await asyncio.sleep(float(deadline))
            if self.pods.get(key) is pod and pod["status"]["phase"] == "Running":
                with contextlib.suppress(DockerException):
                    await self._docker(self.docker.api.kill, container)
                self._set_status(
                    key, "Failed", reason="DeadlineExceeded",
                    message=f"Pod was active on the node longer than the specified deadline ({deadline} s)",
                )  # fmt: skip

    def _create_container(self, key: tuple[str, str], pod: dict) -> str:
        spec = pod["spec"]
        container = spec["containers"][0]
        security = container.get("securityContext") or {}
        capabilities = security.get("capabilities") or {}
        limits = (container.get("resources") or {}).get("limits") or {}
        image = self._local_image(container["image"], container.get("imagePullPolicy", "IfNotPresent"))
        labels = {
            **owner_labels(),  # so `forager envs gc` removes what a killed test process left
            **{k: v for k, v in pod["metadata"]["labels"].items() if k == "forager.episode"},
            SERVER_LABEL: self.id,
            POD_LABEL: "/".join(key),
        }
        created = self.docker.api.create_container(
            image,
            command=container.get("args"),
            entrypoint=container.get("command"),
            working_dir=container.get("workingDir"),
            environment={item["name"]: item.get("value", "") for item in container.get("env") or []},
            labels=labels,
            host_config=self.docker.api.create_host_config(
                init=True,
                network_mode="none",
                mem_limit=_bytes(limits["memory"]) if "memory" in limits else None,
                nano_cpus=int(_cpus(limits["cpu"]) * 1e9) if "cpu" in limits else None,
                pids_limit=self.pod_pids_limit,
                security_opt=["no-new-privileges"]
                if security.get("allowPrivilegeEscalation") is False
                else None,
                cap_drop=capabilities.get("drop"),
                cap_add=capabilities.get("add"),
            ),
        )
        return created["Id"]

    def _local_image(self, reference: str, policy: str) -> str:
        """The id of the image a kubelet would run: the engine's, else pulled (``ImageNotFound`` if not)."""
        try:
            return self.docker.images.get(reference).id
        except ImageNotFound:
            if policy == "Never":
                raise
        name, _, digest = reference.partition("@")
        if name.split("/")[0].split(":")[0] not in ("127.0.0.1", "localhost"):
            # Never traffic to a public address: this node reaches only loopback registries.
            raise ImageNotFound(f"{reference} is not on this node (it pulls from loopback registries only)")
        # A kubelet pulls ``name:tag@digest`` by its digest, as the engine's pull wants it.
        if digest:
            name = f"{name.rpartition(':')[0] if ':' in name.rpartition('/')[2] else name}@{digest}"
        try:
            return self.docker.images.pull(name).id
        except DockerException as exc:
            raise ImageNotFound(f"cannot pull {reference}: {exc}") from exc

    def _set_status(self, key: tuple[str, str], phase: str, *, name: str = "", **state: Any) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        status = pod["status"]
        status["phase"] = phase
        for field in ("reason", "message"):
            if field in state:
                status[field] = state.pop(field)
        if state:
            container = name or pod["spec"]["containers"][0]["name"]
            status["containerStatuses"] = [
                {
                    "name": container,
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": "",
                    "ready": "running" in state,
                    "restartCount": 0,
                    "state": state,
                }
            ]
        self._store(key, pod, "MODIFIED")

    async def _reap(self) -> None:
        """Every half second, mark the pods whose container ended Succeeded or Failed."""
        while True:
            await asyncio.sleep(0.5)
            running = {
                container: key
                for key, container in self._containers.items()
                if self.pods.get(key, {}).get("status", {}).get("phase") == "Running"
            }
            if not running:
                continue
            with contextlib.suppress(DockerException):
                ended = await self._docker(
                    self.docker.api.containers,
                    all=True,
                    filters={"label": f"{SERVER_LABEL}={self.id}", "status": "exited"},
                )
                for summary in ended:
                    key = running.get(summary["Id"])
                    if key is None:
                        continue
                    state = await self._docker(self.docker.api.inspect_container, summary["Id"])
                    code = state["State"]["ExitCode"]
                    reason = (
                        "OOMKilled"
                        if state["State"]["OOMKilled"]
                        else ("Completed" if code == 0 else "Error")
                    )
                    terminated = {"exitCode": code, "reason": reason, "finishedAt": _now()}
                    self._set_status(key, "Succeeded" if code == 0 else "Failed", terminated=terminated)

    # -- exec -------------------------------------------------------------------------------------

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        key = (request.match_info["namespace"], request.match_info["name"])
        pod = self.pods.get(key)
        if pod is None:
            return _not_found(key[1])
        container = self._containers.get(key)
        if pod["status"]["phase"] != "Running" or container is None:
            return _status(400, "BadRequest", f"pod {key[1]} is not running (phase {pod['status']['phase']})")
        await asyncio.sleep(self.exec_delay)
        command = request.query.getall("command", [])
        stdin = request.query.get("stdin") in ("true", "True", "1")
        try:
            exec_id = (await self._docker(self.docker.api.exec_create, container, command, stdin=stdin))["Id"]
            hijacked = await self._docker(self.docker.api.exec_start, exec_id, socket=True)
        except DockerException as exc:
            return _status(500, "InternalError", f"exec failed: {exc}")
        sock = getattr(hijacked, "_sock", hijacked)
        websocket = web.WebSocketResponse(protocols=(_EXEC_PROTOCOL,), max_msg_size=0)
        await websocket.prepare(request)
        self._execs[websocket] = request.transport
        reader, writer = await asyncio.open_connection(sock=sock)
        to_process = asyncio.ensure_future(self._relay_stdin(websocket, writer))
        try:
            ended = await self._relay_output(reader, websocket)
            if ended:  # the process ended: its exit code on the error channel, then the close
                with contextlib.suppress(ConnectionResetError, DockerException):
                    code = (await self._docker(self.docker.api.exec_inspect, exec_id))["ExitCode"]
                    await websocket.send_bytes(b"\x03" + json.dumps(_exit_status(code, command)).encode())
        finally:
            to_process.cancel()
            self._execs.pop(websocket, None)
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await websocket.close()
        return websocket

    async def _relay_stdin(self, websocket: web.WebSocketResponse, writer: asyncio.StreamWriter) -> None:
        async for message in websocket:
            if message.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                break
            data = message.data if isinstance(message.data, bytes) else message.data.encode()
            if data[:1] == b"\x00":
                writer.write(data[1:])
                await writer.drain()
        # The client went away: the process's stdin ends, as the kubelet closes it.
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _relay_output(self, reader: asyncio.StreamReader, websocket: web.WebSocketResponse) -> bool:
        """Docker's multiplexed frames to channel messages; True once the process ended."""
        while not websocket.closed:
            try:
                header = await reader.readexactly(8)
                stream, size = struct.unpack(">BxxxL", header)
                payload = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return True
            try:
                await websocket.send_bytes(bytes([stream]) + payload)
            except ConnectionResetError:
                return False
        return False

    async def _drop_execs(self) -> int:
        transports = [transport for transport in self._execs.values() if transport is not None]
        for transport in transports:
            transport.abort()  # an abrupt cut, not a close handshake: the client learns of it from its socket
        return len(transports)


# -- the wire format ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event(kind: str, pod: dict) -> bytes:
    return (json.dumps({"type": kind, "object": pod}) + "\n").encode()


def _status(code: int, reason: str, message: str, name: str = "") -> web.Response:
    body = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": {"name": name, "kind": "pods"}, "code": code,
    }  # fmt: skip
    return web.json_response(body, status=code)


def _not_found(name: str) -> web.Response:
    return _status(404, "NotFound", f'pods "{name}" not found', name)


def _exit_status(code: int, command: list[str]) -> dict:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command {command}, "
        f"exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }  # fmt: skip


def _selector(labels: str, fields: str) -> Any:
    """A predicate for a pod from a label selector (=, ==, !=, key, !key) and a field selector."""
    tests = []
    for term in filter(None, (part.strip() for part in labels.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            tests.append(lambda pod, k=key, v=value: pod["metadata"]["labels"].get(k) != v)
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            tests.append(lambda pod, k=key, v=value: pod["metadata"]["labels"].get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda pod, k=term[1:]: k not in pod["metadata"]["labels"])
        else:
            tests.append(lambda pod, k=term: k in pod["metadata"]["labels"])
    for term in filter(None, (part.strip() for part in fields.split(","))):
        path, value = term.replace("==", "=").split("=", 1)
        section, field = path.split(".", 1)
        tests.append(lambda pod, s=section, f=field, v=value: str(pod.get(s, {}).get(f)) == v)
    return lambda pod: all(test(pod) for test in tests)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def _bytes(quantity: str) -> int:
    for suffix, factor in (*_BINARY.items(), *_DECIMAL.items()):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
