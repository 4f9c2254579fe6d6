"""The gateway (inference request path) and the embedded engine (serving/engine)."""
