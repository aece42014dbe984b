"""Validation shared by badges and titles (each failure is an ``INVALID_INPUT``)."""

from __future__ import annotations

from server.errors import invalid

MAX_DESCRIPTION = 2000


def validate_name(name: str) -> str:
    if not name.strip() or len(name) > 255:
        raise invalid("name must be 1 to 255 characters", "name")
    return name.strip()


def validate_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise invalid(f"description is limited to {MAX_DESCRIPTION} characters", "description")
    return description
