"""The control plane's domain. Each module holds one aggregate; import from here."""

from controlplane.models.audit import AuditDigest, AuditEvent
from controlplane.models.backends import Backend, BackendKind, BackendReplica
from controlplane.models.budgets import Budget, BudgetPeriod, BudgetScope
from controlplane.models.catalog import ModelVersion
from controlplane.models.endpoints import Endpoint, EndpointFallback, TrafficSplit
from controlplane.models.keys import ApiKey, KeyScope
from controlplane.models.releases import Release
from controlplane.models.teams import Membership, Role, Team

__all__ = [
    "ApiKey",
    "AuditDigest",
    "AuditEvent",
    "Backend",
    "BackendKind",
    "BackendReplica",
    "Budget",
    "BudgetPeriod",
    "BudgetScope",
    "Endpoint",
    "EndpointFallback",
    "KeyScope",
    "Membership",
    "ModelVersion",
    "Release",
    "Role",
    "Team",
    "TrafficSplit",
]
