"""Writes owned by the serving app (each with its audit event in the same transaction)."""
