"""Celery tasks of the control plane, one module per area (autodiscovery imports this package)."""

from controlplane.tasks import audit, budgets, core

__all__ = ["audit", "budgets", "core"]
