"""``Award``: what an action granted, shared by every payload that rewards a member."""

from __future__ import annotations

from enum import Enum

import strawberry

from server.awards import Award as AwardValue


@strawberry.enum
class AwardKind(Enum):
    POINTS = "POINTS"
    XP = "XP"
    BADGE = "BADGE"
    TITLE = "TITLE"


@strawberry.type(description="Something a member received: points, xp, a badge or a title.")
class Award:
    kind: AwardKind
    currency: str | None
    amount: int | None
    key: str | None


def award_from_value(value: AwardValue) -> Award:
    return Award(
        kind=AwardKind(value.kind.value),
        currency=value.currency,
        amount=value.amount,
        key=value.key,
    )


def awards_from_values(values: list[AwardValue]) -> list[Award]:
    return [award_from_value(v) for v in values]
