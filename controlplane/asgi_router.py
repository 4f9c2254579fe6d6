"""Splits HTTP traffic between the gateway's lean app and Django by path prefix."""

from __future__ import annotations

from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

ASGIApp = Any
GATEWAY_PREFIXES = ("/v1/", "/endpoints/")


class HttpRouter:
    def __init__(self, django_app: ASGIApp, gateway_app: ASGIApp | None = None) -> None:
        self.django_app = django_app
        self.gateway_app = gateway_app

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if self.gateway_app is not None and str(scope.get("path", "")).startswith(GATEWAY_PREFIXES):
            await self.gateway_app(scope, receive, send)
            return
        await self.django_app(scope, receive, send)


async def lifespan_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Starts this process's gateway (pooled backend sessions, cache listener, usage flusher) and
    stops it on shutdown, flushing buffered usage records."""
    from serving.gateway.runtime import close_gateway, get_gateway

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await get_gateway()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_gateway()
            await send({"type": "lifespan.shutdown.complete"})
            return
