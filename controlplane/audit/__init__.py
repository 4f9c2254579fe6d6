"""The tamper-evident audit log beyond the writer (controlplane.services.audit):
signed hourly digests, chain and digest verification, filtered streaming export (JSONL/CSV, OCSF)."""
