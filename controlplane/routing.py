"""WebSocket routes."""

from django.urls import path

from controlplane.consumers import EchoConsumer
from serving.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws/echo/", EchoConsumer.as_asgi()),
    path("ws/chat/", ChatConsumer.as_asgi()),
]
