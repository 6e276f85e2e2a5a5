"""An ASGI middleware that refuses a request body larger than the service accepts, before any parsing.

A declared `Content-Length` over the limit is refused without reading a byte. A body without one
(chunked transfer encoding) is read up to the limit and refused the moment it passes it, so a client
streaming a gigabyte costs us at most `max_body_bytes` of memory. A body within the limit is handed to
the app as it arrived: the app never sees a byte of an oversized one, and nothing changes state.

    app.add_middleware(BodyLimit, max_body_bytes=64 * 1024)
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend_stub.cardata.http_errors import error_response

_LOGGER = logging.getLogger(__name__)


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must not be negative, got {max_body_bytes}")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send, f"{declared} bytes declared")
            return
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break  # the client went away: the app sees that as it would have
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                await self._refuse(scope, receive, send, f"more than {self.max_body_bytes} bytes sent")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        path = str(scope.get("path", ""))
        _LOGGER.info("CarData request %s %s refused: body too large (%s)", scope.get("method"), path, what)
        response = error_response(
            path, 413, "CU-413", f"request body too large: {what}; at most {self.max_body_bytes} bytes accepted"
        )
        response.headers["Connection"] = "close"  # the rest of the body is never read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length; a malformed one counts as none (the body is then counted as it arrives)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            # At most 19 digits: int() of an attacker's 10,000-digit header would cost and may raise.
            if text.isascii() and text.isdigit() and len(text) <= 19:
                return int(text)
            return None
    return None
