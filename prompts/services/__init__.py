"""Writes to prompts (each with its audit row in the same transaction), and rendering (no write)."""

from prompts.services.prompts import (
    check_label_name,
    check_prompt_name,
    prompt_create,
    prompt_label_move,
    prompt_render,
    prompt_version_create,
    validate_version_content,
)

__all__ = [
    "check_label_name",
    "check_prompt_name",
    "prompt_create",
    "prompt_label_move",
    "prompt_render",
    "prompt_version_create",
    "validate_version_content",
]
