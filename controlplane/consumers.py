"""A diagnostic WebSocket: echoes each message back through the channel layer.

Going through the layer (group_send to the connection's own group) rather than replying directly
proves that the Redis layer carries messages, which is what the chat stream relies on too.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer


class EchoConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = f"echo.{self.channel_name.replace('!', '_')}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(self.group, {"type": "echo.message", "payload": content})

    async def echo_message(self, event: dict[str, Any]) -> None:
        await self.send_json({"echo": event["payload"], "via": "channel_layer"})
