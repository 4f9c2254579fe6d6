"""Writes to the control plane. Each service runs in one transaction with its audit event."""
