"""Admin console registrations for the control plane."""

from controlplane import admin_audit  # noqa: F401  (registers the audit log views)
