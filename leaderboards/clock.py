"""The leaderboards' notion of "now" (which period is current), replaceable in tests."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
