"""WebSocket chat at /ws/chat/: the gateway's pipeline over a socket.

Authentication: `Authorization: Bearer sb-...` on the upgrade request (an inference key), or a
console session (a team member; say which team with "team" when the user has several).

Client → server:
    {"type": "request", "id": "r1", "model": "<endpoint>", "messages": [...], "max_tokens": 64,
     "variables": {...}, "team": "<slug, sessions only>"}
    {"type": "cancel", "id": "r1"}
Server → client:
    {"type": "token", "id": "r1", "text": "..."}                       as tokens arrive
    {"type": "done", "id": "r1", "finish_reason": "length", "usage": {...}, "release": "...",
     "cost_usd": "...", "request_id": "..."}
    {"type": "cancelled", "id": "r1", "usage": {...}, ...}            after a cancel
    {"type": "error", "id": "r1", "code": "budget_exceeded", "status": 429, "message": "..."}
A cancel or a disconnect stops the upstream generation and settles (releases) the reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from controlplane.logging import new_request_id
from controlplane.models import KeyScope, Membership
from serving import metrics
from serving.backends import BackendError
from serving.catalog import Limits, Principal
from serving.gateway import protocols
from serving.gateway.errors import BadRequest, Forbidden, GatewayError, Unauthorized
from serving.gateway.pipeline import Call
from serving.gateway.runtime import Gateway, get_gateway
from serving.types import TokenChunk

logger = logging.getLogger(__name__)
MAX_PARALLEL_REQUESTS = 8


def _session_principal(user: Any, team_slug: str) -> Principal:
    memberships = Membership.objects.select_related("team").filter(user=user)
    if team_slug:
        memberships = memberships.filter(team__slug=team_slug)
    found = list(memberships[:2])
    if len(found) != 1:
        raise Forbidden("say which team to act for with 'team' (the team's slug); you must be a member")
    team = found[0].team
    return Principal(
        key_id=None,
        lookup_id="",
        digest="",
        name=user.get_username(),
        team_id=team.pk,
        team_slug=team.slug,
        scopes=frozenset({KeyScope.INFERENCE}),
        endpoint_ids=frozenset(),
        expires_at=None,
        revoked_at=None,
        limits=Limits(),
        budgets=(),
    )


class ChatConsumer(AsyncJsonWebsocketConsumer):
    gateway: Gateway
    principal: Principal | None

    async def connect(self) -> None:
        self.gateway = await get_gateway()
        self.principal = None
        self.running: dict[str, tuple[asyncio.Task[None], Call | None]] = {}
        self._session_principals: dict[str, Principal] = {}
        authorization = dict(self.scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        await self.accept()
        if authorization:
            try:
                self.principal = await self.gateway.authenticate(authorization)
            except GatewayError as exc:
                await self._error("", exc)
                await self.close(code=4401 if exc.status in (401, 403) else 4503)
                return
        elif not getattr(self.scope.get("user"), "is_authenticated", False):
            await self._error(
                "", Unauthorized("send 'Authorization: Bearer sb-...' or sign in to the console")
            )
            await self.close(code=4401)

    async def disconnect(self, code: int) -> None:
        for task, _ in list(getattr(self, "running", {}).values()):
            task.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            await self._error("", BadRequest("each message must be a JSON object with a 'type'"))
            return
        kind, msg_id = content.get("type"), str(content.get("id") or "")
        if kind == "cancel":
            entry = self.running.get(msg_id)
            if entry is not None:
                entry[0].cancel()
            return
        if kind != "request":
            await self._error(msg_id, BadRequest("'type' must be 'request' or 'cancel'"))
            return
        if not msg_id or msg_id in self.running:
            await self._error(
                msg_id, BadRequest("give each request a unique 'id' (to match frames and cancel)")
            )
            return
        if len(self.running) >= MAX_PARALLEL_REQUESTS:
            await self._error(
                msg_id, BadRequest(f"at most {MAX_PARALLEL_REQUESTS} requests in flight per socket")
            )
            return
        task = asyncio.create_task(self._run(msg_id, content))
        self.running[msg_id] = (task, None)
        task.add_done_callback(lambda _: self.running.pop(msg_id, None))

    async def _principal_for(self, content: dict[str, Any]) -> Principal:
        if self.principal is not None:
            return self.principal
        slug = str(content.get("team") or "")
        if slug not in self._session_principals:
            self._session_principals[slug] = await database_sync_to_async(_session_principal)(
                self.scope["user"], slug
            )
        return self._session_principals[slug]

    async def _run(self, msg_id: str, content: dict[str, Any]) -> None:
        call: Call | None = None
        try:
            principal = await self._principal_for(content)
            request = protocols.parse_chat(
                {**content, "stream": True, "stream_options": {"include_usage": True}}
            )
            call = Call(self.gateway, principal, request, new_request_id(None))
            self.running[msg_id] = (self.running[msg_id][0], call)
            await self._admit_and_open(call)
            await self._relay(msg_id, call)
        except asyncio.CancelledError:
            if call is not None:
                await self._cancelled(msg_id, call)
        except GatewayError as exc:
            await self._error(msg_id, exc)
        except Exception:
            logger.exception("websocket chat request failed")
            await self._error(msg_id, GatewayError("internal error"))

    @staticmethod
    async def _admit_and_open(call: Call) -> None:
        try:
            await call.admit()
        except GatewayError as exc:
            call.finish(status="rejected", http_status=exc.status, error_type=exc.code)
            raise
        try:
            await call.open_stream()
        except GatewayError as exc:
            call.finish(status="error", http_status=exc.status, finish_reason="error", error_type=exc.code)
            raise

    async def _relay(self, msg_id: str, call: Call) -> None:
        chunk: TokenChunk | None = call.take_first()
        try:
            while chunk is not None and chunk.finish_reason is None:
                if chunk.text and not chunk.special:
                    await self.send_json({"type": "token", "id": msg_id, "text": chunk.text})
                chunk = await call.next_chunk()
        except BackendError as exc:
            call.settle_tokens()
            call.finish(
                status="error",
                http_status=200,
                finish_reason="error",
                error_type=exc.error_type or "stream_error",
            )
            await self._send(
                {
                    "type": "error",
                    "id": msg_id,
                    "code": "incomplete_generation_stream",
                    "status": 502,
                    "message": f"the backend stream was interrupted: {exc.message}",
                    **self._usage(call),
                }
            )
            return
        call.settle_tokens()
        reason = chunk.finish_reason if chunk is not None and chunk.finish_reason else "length"
        if chunk is not None and chunk.text and not chunk.special:
            await self.send_json({"type": "token", "id": msg_id, "text": chunk.text})
        call.finish(status="ok", http_status=200, finish_reason=reason)
        await self._send(
            {
                "type": "done",
                "id": msg_id,
                "finish_reason": protocols.openai_finish(reason),
                **self._usage(call),
            }
        )

    async def _cancelled(self, msg_id: str, call: Call) -> None:
        call.cancel()
        if call.prepared is not None and call.release is not None:
            call.settle_tokens()
        call.finish(status="cancelled", http_status=499, finish_reason="cancelled")
        await self._send({"type": "cancelled", "id": msg_id, **self._usage(call)})

    @staticmethod
    def _usage(call: Call) -> dict[str, Any]:
        usage = {
            "prompt_tokens": call.tokens_in,
            "completion_tokens": call.tokens_out,
            "total_tokens": call.tokens_in + call.tokens_out,
        }
        return {
            "usage": usage,
            **call.summary(),
            "elapsed_ms": round((time.perf_counter() - call.t0) * 1000, 1),
        }

    async def _error(self, msg_id: str, exc: GatewayError) -> None:
        metrics.rejected(exc.code)
        await self._send(
            {
                "type": "error",
                "id": msg_id,
                "code": exc.code,
                "status": exc.status,
                "message": exc.message,
                **({"retry_after": exc.retry_after} if exc.retry_after else {}),
            }
        )

    async def _send(self, frame: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # the socket may be gone (disconnect): nothing to tell
            await self.send_json(frame)
