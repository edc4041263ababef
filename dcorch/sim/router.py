"""The raw ASGI application: prefix routing to a cloud and service, faults, and I/O.

Routing is two ``str.partition`` calls on ``scope["path"]`` and one dict lookup, so a request
costs the same with 10 or 10,000 subclouds. Faults apply before the body is read, as with a dead
or slow host. Handlers are synchronous; the only awaits are the body, fault delays and answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from dcorch.sim import control, dcdbsync, dcmanager, keystone, sysinv
from dcorch.sim.endpoints import (
    CONTROL_PREFIX,
    DCDBSYNC,
    DCMANAGER,
    KEYSTONE,
    MASTER_PREFIX,
    SERVICE_VERSIONS,
    SUBCLOUD_PREFIX,
    SYSINV,
)
from dcorch.sim.faults import HANG_SECONDS, FaultAction
from dcorch.sim.http import HttpError, Request, Response, parse_query
from dcorch.sim.routes import RouteTable
from dcorch.sim.state import CloudState, SimState

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

SERVICES: Final[dict[str, RouteTable]] = {
    KEYSTONE: keystone.ROUTES,
    SYSINV: sysinv.ROUTES,
    DCDBSYNC: dcdbsync.ROUTES,
    DCMANAGER: dcmanager.ROUTES,
}
SUBCLOUD_SERVICES: Final = frozenset({KEYSTONE, SYSINV, DCDBSYNC})
MAX_BODY_BYTES: Final = 16 * 1024 * 1024


class SimApp:
    """ASGI entry point for the master, every subcloud and the control API."""

    def __init__(self, sim: SimState) -> None:
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        head, _, rest = path.lstrip("/").partition("/")
        if head == SUBCLOUD_PREFIX:
            region, _, rest = rest.partition("/")
            cloud = self.sim.subclouds.get(region)
            if cloud is None:
                await _send(send, HttpError(404, f"unknown subcloud {region}").response(), scope)
                return
            await self._serve(cloud, f"/{SUBCLOUD_PREFIX}/{region}", rest, scope, receive, send)
        elif head == MASTER_PREFIX:
            await self._serve(self.sim.master, f"/{MASTER_PREFIX}", rest, scope, receive, send)
        elif head == CONTROL_PREFIX:
            await self._dispatch(
                control.ROUTES, self.sim.master, f"/{CONTROL_PREFIX}", rest, scope, receive, send
            )
        else:
            await _send(send, HttpError(404, f"no simulated cloud at {path}").response(), scope)

    async def _serve(
        self,
        cloud: CloudState,
        prefix: str,
        rest: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Serve one request of ``cloud``; a subcloud's injected faults apply first."""
        if await self._faulted(cloud, rest, scope, receive, send):
            return
        service, _, tail = rest.partition("/")
        table = SERVICES.get(service)
        if table is None or (not cloud.is_master and service not in SUBCLOUD_SERVICES):
            await _send(send, HttpError(404, f"no service {service} here").response(), scope)
            return
        version, _, inner = tail.partition("/")
        if version != SERVICE_VERSIONS[service]:
            await _send(
                send, table.error(404, f"unknown API version {version!r}").response(), scope
            )
            return
        await self._dispatch(
            table, cloud, f"{prefix}/{service}/{version}", inner, scope, receive, send
        )

    async def _faulted(
        self, cloud: CloudState, rest: str, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Act out the injected fault, if any; True when that answered the request.

        A subcloud's faults hit all its services; the master's are per service (its DB-sync
        down while its keystone answers), and the default latency is for subclouds only.
        """
        if cloud.is_master:
            state = self.sim.master_faults.get(rest.partition("/")[0])
            if state is None:
                return False
            latency = 0.0
        else:
            state = cloud.faults
            latency = self.sim.default_latency_ms
        action = FaultAction.PASS
        if state is not None:
            action = state.decide(trio.current_time())
            latency = state.faults.latency_ms or latency
        if action is FaultAction.OFFLINE:
            await _drop_connection(send)
            return True
        if latency:
            await trio.sleep(latency / 1000)
        if action is FaultAction.TIMEOUT:
            await _hang(receive)
            return True
        if action is FaultAction.ERROR and state is not None:
            service = rest.partition("/")[0]
            table = SERVICES.get(service, control.ROUTES)
            cloud.count(f"{scope['method']} {service} <injected error>")
            await _read_body(receive)
            error = table.error(state.faults.error_status, "simulated failure")
            await _send(send, error.response(), scope)
            return True
        return False

    async def _dispatch(
        self,
        table: RouteTable,
        cloud: CloudState,
        prefix: str,
        inner: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        body = await _read_body(receive)
        if body is None:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        server = f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"
        req = Request(
            scope["method"],
            inner,
            parse_query(scope.get("query_string", b"")),
            headers,
            body,
            base_url=server + prefix,
            server_url=server,
        )
        try:
            if len(body) > MAX_BODY_BYTES:
                raise table.error(413, "request body too large")
            response = table.dispatch(cloud, req)
        except HttpError as exc:
            response = exc.response()
        except Exception:
            logger.exception("sim.handler_crashed path=%s", scope["path"])
            response = table.error(500, "internal error in the simulator").response()
        await self.sim.master_ca_files.flush()  # files a handler staged, before the answer
        await _send(send, response, scope)


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body; None if the client went away first."""
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
        else:
            chunks = [b"\0" * (MAX_BODY_BYTES + 1)]
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, response: Response, scope: Scope) -> None:
    headers = list(response.headers)
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type))
    body = b"" if scope["method"] == "HEAD" else response.body
    if response.status not in {204, 304} and scope["method"] != "HEAD":
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _drop_connection(send: Send) -> None:
    # "Offline" on a shared port (see dcorch.sim.faults): promise a body and return without it;
    # hypercorn closes the connection and the client sees a transport error, not a status.
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-length", b"1"), (b"connection", b"close")],
        }
    )


async def _hang(receive: Receive) -> None:
    # Hold the request until the client disconnects (its timeout fired) or the server stops.
    with trio.move_on_after(HANG_SECONDS):
        while (await receive())["type"] != "http.disconnect":
            pass


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
