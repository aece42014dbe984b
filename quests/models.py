"""Events, quest definitions, per-period progress, and check-in streaks."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class Event(Base):
    """Something a member did, reported by a merchant back-end (or by Questline itself, e.g.
    ``check_in``). Stored once per (member, idempotency key); ``result`` keeps what the event
    caused so that a retried report returns the same answer."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("member_id", "idempotency_key", name="uq_events_member_id_key"),
        Index("ix_events_member_id_type", "member_id", "type"),
        Index("ix_events_type_occurred_at", "type", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    properties: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    input_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    result: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )


class Quest(Base):
    __tablename__ = "quests"
    __table_args__ = (
        CheckConstraint("target > 0", name="target_positive"),
        Index("ix_quests_event_type_active", "event_type", postgresql_where=text("active")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    cadence: Mapped[str] = mapped_column(String(16), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    filter: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    aggregate: Mapped[str] = mapped_column(String(16), nullable=False, server_default="COUNT")
    property: Mapped[str | None] = mapped_column(String(64))
    target: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rewards: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    min_tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"))
    auto_claim: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class QuestProgress(Base):
    """A member's progress on one quest in one period (a ONCE quest has a single period).

    At most one row per (member, quest, period): the row lock taken by the upsert is what makes
    a quest complete at most once per period, even for concurrent events. ``rewards`` is the
    quest's reward list as it was when the quest completed, so editing a quest later never
    rewrites what was earned.
    """

    __tablename__ = "quest_progress"
    __table_args__ = (
        UniqueConstraint(
            "member_id", "quest_id", "period_start", name="uq_quest_progress_member_period"
        ),
        CheckConstraint("status IN ('IN_PROGRESS', 'COMPLETED', 'CLAIMED')", name="status_known"),
        Index("ix_quest_progress_member_id", "member_id", "period_end"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    quest_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("quests.id"), nullable=False)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    aggregate: Mapped[str] = mapped_column(String(16), nullable=False, server_default="COUNT")
    progress: Mapped[Decimal] = mapped_column(Numeric(20, 4), nullable=False, server_default="0")
    target: Mapped[int] = mapped_column(BigInteger, nullable=False)
    days: Mapped[list[date]] = mapped_column(ARRAY(Date), nullable=False, server_default="{}")
    last_day: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="IN_PROGRESS")
    completed_by_event_id: Mapped[int | None] = mapped_column(BigInteger)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rewards: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class CheckInReward(Base):
    """What a check-in on streak day ``day`` gives; ``day = 0`` is the default for any day
    without a row of its own (e.g. 10 points every day, 50 on day 7)."""

    __tablename__ = "check_in_rewards"

    day: Mapped[int] = mapped_column(Integer, primary_key=True)
    points: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    xp: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")


class Streak(Base):
    __tablename__ = "streaks"

    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), primary_key=True)
    current: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    longest: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    last_check_in_date: Mapped[date | None] = mapped_column(Date)
    last_check_in_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CheckIn(Base):
    """One check-in per member per local day (the unique key enforces it)."""

    __tablename__ = "check_ins"
    __table_args__ = (
        UniqueConstraint("member_id", "local_date", name="uq_check_ins_member_id_local_date"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    local_date: Mapped[date] = mapped_column(Date, nullable=False)
    streak_day: Mapped[int] = mapped_column(Integer, nullable=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    awards: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
