"""Audit tasks: the hourly signed digest."""
