"""Origin checking for WebSocket handshakes that does not lock out non-browser clients.

Cross-site WebSocket hijacking needs a victim's browser (it rides on the session cookie), and
browsers always send `Origin` on a WebSocket handshake. A handshake without `Origin` therefore
comes from an SDK or CLI, which authenticates with an API key; it passes here and the consumer
decides. A handshake with `Origin` must match ALLOWED_HOSTS, as Channels' own validator requires.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import ParseResult

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):  # type: ignore[misc]
    def valid_origin(self, parsed_origin: ParseResult | None) -> bool:
        if parsed_origin is None:
            return True
        return bool(super().valid_origin(parsed_origin))


def browser_origin_validator(application: Any) -> BrowserOriginValidator:
    allowed_hosts = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
