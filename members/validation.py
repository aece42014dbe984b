"""Validation shared by the member services (each failure is an ``INVALID_INPUT``)."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.errors import invalid

KEY_HELP = "1 to 64 characters: lowercase letters, digits, '-' and '_'"


def validate_timezone(name: str, field: str = "timezone") -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid(f"unknown timezone {name!r}", field) from exc
    return name


def validate_external_id(external_id: str) -> str:
    if not external_id or len(external_id) > 255 or external_id != external_id.strip():
        raise invalid(
            "externalId must be 1 to 255 characters, without surrounding spaces", "externalId"
        )
    return external_id


def validate_key(key: str, field: str = "key") -> str:
    """Keys name things admins curate (tiers, quests, badges...) and appear in URLs and logs."""
    if not key or len(key) > 64 or not all(c.islower() or c.isdigit() or c in "-_" for c in key):
        raise invalid(f"key must be {KEY_HELP}", field)
    return key
