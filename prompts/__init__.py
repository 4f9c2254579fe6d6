"""Prompt templates, versions, labels and rendering."""
