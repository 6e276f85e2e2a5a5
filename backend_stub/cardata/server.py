"""The CarData HTTP service on a port, as one task of the backend's TaskGroup.

    server = CardataServer(app, host="127.0.0.1", port=0)
    tasks.create_task(server.run(), name="cardata-http")
    await server.ready.wait(); server.port      # the port bound (0 asks the system for a free one)

uvicorn serves the app, but not through `uvicorn.Server.serve`: that installs its own SIGINT/SIGTERM
handlers, which would take the backend's orderly shutdown (tcu.runner) away from it. The socket is
bound here (a refusal is the backend's error, naming host and port, not uvicorn's `sys.exit`), the
server started on it, and cancelling the task closes the listener and lets requests in flight finish
for at most `GRACEFUL_S` before their connections are closed.

Loopback by default: the service hands out vehicle data to whoever holds a token; listening on
another interface is a decision the configuration says out loud (`[cardata] host`).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from starlette.types import ASGIApp

from backend_stub.errors import BackendConfigError

_LOGGER = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
GRACEFUL_S = 2  # requests in flight at shutdown get this long
MAX_CONNECTIONS = 200  # beyond this uvicorn answers 503 at once (documented as BMW's "temporary error")


class CardataServer:
    def __init__(self, app: ASGIApp, *, host: str = DEFAULT_HOST, port: int = 0) -> None:
        if not 0 <= port <= 65535:
            raise BackendConfigError(f"cardata.port must be 0..65535, got {port}")
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the bound port, once `ready` is set
        self.ready = asyncio.Event()
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # nothing to start: the backend owns the stores
            log_config=None,  # the backend's logging, not uvicorn's
            access_log=False,  # one line per request would drown ingest's log
            limit_concurrency=MAX_CONNECTIONS,
            timeout_graceful_shutdown=GRACEFUL_S,
            server_header=False,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        try:
            listener = socket.create_server((self.host, self.requested_port), family=family)
        except OSError as exc:
            raise BackendConfigError(
                f"cardata: cannot listen on {self.host}:{self.requested_port}: {exc.strerror or exc}"
            ) from exc
        listener.setblocking(False)
        return listener

    async def run(self) -> None:
        """Serve until cancelled."""
        listener = self._bind()
        server = uvicorn.Server(self._config)
        try:
            self._config.load()
            server.lifespan = self._config.lifespan_class(self._config)  # as `Server.serve` would (lifespan off)
            await server.startup(sockets=[listener])
            self.port = listener.getsockname()[1]
            _LOGGER.info("CarData API listening on %s (OpenAPI at %s/openapi.json)", self.url, self.url)
            self.ready.set()
            await server.main_loop()  # keeps the Date header fresh; returns only when told to exit
        finally:
            self.ready.clear()
            if server.started:
                server.should_exit = True
                await server.shutdown(sockets=[listener])
            listener.close()
            _LOGGER.info("CarData API stopped")
