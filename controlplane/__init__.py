"""Switchboard's control plane: project settings, ASGI and Celery apps, and the core domain."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
