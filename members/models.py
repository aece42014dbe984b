"""Members and what belongs to them: program settings, tiers, tier and lifecycle history."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    BigInteger,
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
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class Member(Base):
    __tablename__ = "members"
    # Suspended members are few and looked up often (every API process refreshes the set it
    # hides from leaderboards every few seconds): a partial index, not a scan of every member.
    __table_args__ = (
        Index("ix_members_suspended", "id", postgresql_where=text("status = 'suspended'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    display_name: Mapped[str | None] = mapped_column(String(255))
    birthday: Mapped[date | None] = mapped_column(Date)
    timezone: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="active")
    referral_code: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    joined_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    referred_by_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("members.id"))
    tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"), index=True)
    tier_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The stage the daily scan last recorded (the API computes the live one: see lifecycle.py).
    lifecycle_stage: Mapped[str | None] = mapped_column(String(16))


class ProgramSettingsRow(Base):
    __tablename__ = "program_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64), nullable=False, server_default="UTC")
    welcome_points: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    birthday_points: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    points_lifetime_days: Mapped[int | None] = mapped_column(Integer, server_default="365")
    pending_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    referrer_reward: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    referee_reward: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    referral_qualifying_event: Mapped[str | None] = mapped_column(
        String(64), server_default="purchase"
    )
    max_referral_rewards_per_month: Mapped[int | None] = mapped_column(Integer)
    new_member_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="7")
    retained_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="90")
    loyal_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="365")
    at_risk_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="15")
    lapsed_days: Mapped[int] = mapped_column(Integer, nullable=False, server_default="60")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class Tier(Base):
    __tablename__ = "tiers"
    __table_args__ = (
        CheckConstraint("xp_threshold >= 0", name="xp_threshold_non_negative"),
        CheckConstraint("points_multiplier > 0", name="points_multiplier_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, unique=True, nullable=False)
    xp_threshold: Mapped[int] = mapped_column(BigInteger, nullable=False)
    points_multiplier: Mapped[Decimal] = mapped_column(
        Numeric(6, 3), nullable=False, server_default="1.0"
    )
    retention_xp: Mapped[int | None] = mapped_column(BigInteger)
    window_days: Mapped[int | None] = mapped_column(Integer, server_default="365")
    benefits: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class TierChange(Base):
    """Every change of a member's tier, with its reason (never updated)."""

    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id"), nullable=False, index=True
    )
    from_tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"))
    to_tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"))
    reason: Mapped[str] = mapped_column(String(32), nullable=False)  # upgrade | retention | ...
    xp_in_window: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class LifecycleChange(Base):
    """A member's lifecycle stage changed (recorded once per change by the daily scan)."""

    __tablename__ = "lifecycle_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("members.id"), nullable=False, index=True
    )
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
