"""Audit API routes: listing, export (JSONL/CSV), verification."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
