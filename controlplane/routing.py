"""WebSocket routes; serving adds the chat stream."""

from django.urls import path

from controlplane.consumers import EchoConsumer

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
]
