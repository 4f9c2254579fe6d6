"""Change notifications for in-process caches in every web process.

After a commit that changes what the gateway serves (a key revoked, an endpoint switched), a
message goes out on one Redis pub/sub channel. Each web process listens and drops the cached
entry, so the change is effective everywhere within a second without a database query per request.
"""

from __future__ import annotations

import json
import logging

import redis
from django.conf import settings
from django.db import transaction

CHANNEL = "switchboard:invalidate"
logger = logging.getLogger(__name__)


def publish(kind: str, key: str) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.publish(CHANNEL, json.dumps({"kind": kind, "key": key}))
    except redis.RedisError:
        # Caches also expire on their own (short TTL), so a lost message delays, never breaks.
        logger.warning("cache invalidation not published", extra={"kind": kind, "key": key})
    finally:
        client.close()


def publish_after_commit(kind: str, key: str) -> None:
    transaction.on_commit(lambda: publish(kind, key))
