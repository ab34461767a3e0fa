"""Request body size limit, enforced while the body streams in (not after buffering).

A declared ``Content-Length`` over the limit is refused before a byte is read; a
chunked or lying body is cut off as soon as the running total passes the limit (no
further byte is read, the connection is closed). Either way the client gets a 413
problem document, also on routes whose body parser reports read errors its own way.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tipline.api.problems import ProblemResponse, problem
from tipline.errors import MediaTooLargeError


class BodyTooLargeError(MediaTooLargeError):
    """The HTTP request body is larger than ``max_body_bytes``."""

    code = "body-too-large"


class BodyLimitMiddleware:
    """Pure ASGI middleware: 413 once a request body passes ``max_bytes`` bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value.decode("latin-1").strip()
                if not declared.isdigit():
                    await problem(400, "malformed Content-Length header")(scope, receive, send)
                    return
                if int(declared) > limit:
                    await _too_large(limit)(scope, receive, send)
                    return
        seen = 0
        exceeded = False
        replied = False  # a response has started (the app's or our 413)
        ours = False  # ... and it is our 413

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            if exceeded:  # never read past the limit, however the app retries
                raise BodyTooLargeError(f"request body exceeds {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = True
                    raise BodyTooLargeError(f"request body exceeds {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            # Routes parsing JSON turn any error while reading the body into their own
            # answer (FastAPI: 400 "error parsing the body"); once the limit has been
            # passed, that answer is replaced by the 413 here.
            nonlocal replied, ours
            if exceeded and not (replied and not ours):
                if message["type"] == "http.response.start" and not replied:
                    replied = ours = True
                    await _too_large(limit)(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                replied = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            if ours:
                return
            if replied:
                raise
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> ProblemResponse:
    return problem(
        413,
        f"request body exceeds the limit of {limit} bytes",
        code="body-too-large",
        headers={"Connection": "close"},
    )
