"""What a member received from one action, as the API reports it (``Award``).

Shared by every domain that rewards members (quests, check-ins, badges, titles, referrals),
so that a payload can list everything one event granted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AwardKind(StrEnum):
    POINTS = "POINTS"
    XP = "XP"
    BADGE = "BADGE"
    TITLE = "TITLE"


@dataclass(frozen=True)
class Award:
    kind: AwardKind
    amount: int | None = None  # points/xp amount; a badge's level
    currency: str | None = None  # for POINTS and XP
    key: str | None = None  # the badge or title key; for points, the reward's source


def points(amount: int, currency: str = "points", key: str | None = None) -> Award:
    kind = AwardKind.XP if currency == "xp" else AwardKind.POINTS
    return Award(kind, amount=amount, currency=currency, key=key)
