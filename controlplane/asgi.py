"""The ASGI entry point: Django for the console and management API, Channels for WebSockets.

The inference routes (/v1/..., /endpoints/...) go to a lean Starlette app that skips Django's
request cycle (see shared/reference/hot-path-measurements.md); serving.gateway provides it.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
django_asgi = get_asgi_application()  # must run before importing code that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from controlplane.asgi_router import HttpRouter, lifespan_app  # noqa: E402
from controlplane.routing import websocket_urlpatterns  # noqa: E402
from controlplane.websocket_security import browser_origin_validator  # noqa: E402
from serving.gateway.app import gateway_app  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": HttpRouter(django_asgi, gateway_app),
        "websocket": browser_origin_validator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": lifespan_app,
    }
)
