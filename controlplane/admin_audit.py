"""Admin views of the audit log (read-only)."""
