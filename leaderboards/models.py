"""Leaderboard definitions and the archive of closed periods.

Live standings are NOT here: they sit in Redis sorted sets (see ``leaderboards.store``), and
everything in Redis can be rebuilt from the ledger and the events table (``rebuild.py``).
PostgreSQL keeps what must survive: the definitions, and the final standings of every
finished period (written once by ``leaderboards.close_period``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class Leaderboard(Base):
    """A board definition. ``version`` grows whenever what the board counts changes (metric,
    event type, period): the Redis keys of the old definition are then dropped and rebuilt.
    ``stale_since`` is set when a live update could not reach Redis; the maintenance job
    rebuilds such boards and clears it."""

    __tablename__ = "leaderboards"
    __table_args__ = (
        CheckConstraint(
            "metric IN ('POINTS_EARNED', 'XP_EARNED', 'EVENT_COUNT')", name="metric_known"
        ),
        CheckConstraint(
            "period IN ('DAILY', 'WEEKLY', 'MONTHLY', 'ALL_TIME')", name="period_known"
        ),
        CheckConstraint(
            "(metric = 'EVENT_COUNT') = (event_type IS NOT NULL)", name="event_type_for_counts"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    metric: Mapped[str] = mapped_column(String(16), nullable=False)
    event_type: Mapped[str | None] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(16), nullable=False)
    # [{"rank": 1, "toRank": 1, "amount": 500, "currency": "points"}, ...]
    rewards: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb")
    )
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    version: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    stale_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class LeaderboardPeriod(Base):
    """A finished period of a board, archived once (the row is the "closed" marker: inserting
    it is what makes closing idempotent)."""

    __tablename__ = "leaderboard_periods"
    __table_args__ = (PrimaryKeyConstraint("leaderboard_id", "period_id"),)

    leaderboard_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("leaderboards.id"), nullable=False
    )
    period_id: Mapped[str] = mapped_column(String(16), nullable=False)  # "2026-11-23", ...
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False)
    entries: Mapped[int] = mapped_column(Integer, nullable=False)
    rewarded: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    closed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class LeaderboardStanding(Base):
    """One row of a closed period's final standings (rank 1 is the winner)."""

    __tablename__ = "leaderboard_standings"
    __table_args__ = (
        PrimaryKeyConstraint("leaderboard_id", "period_id", "rank"),
        ForeignKeyConstraint(
            ["leaderboard_id", "period_id"],
            ["leaderboard_periods.leaderboard_id", "leaderboard_periods.period_id"],
        ),
        Index("ix_leaderboard_standings_member", "leaderboard_id", "period_id", "member_id"),
    )

    leaderboard_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    period_id: Mapped[str] = mapped_column(String(16), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    member_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    score: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reached_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
