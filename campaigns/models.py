"""Campaigns: time-boxed points multipliers. Migration ``0005`` creates this table."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base


class Campaign(Base):
    """Points earned by ``event_types`` (empty: every type) from ``starts_at`` (inclusive) to
    ``ends_at`` (exclusive), by members of ``min_tier`` or a higher-ranked tier (null: every
    member), are multiplied by ``multiplier``."""

    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint("multiplier > 0", name="multiplier_positive"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        Index("ix_campaigns_ends_at", "ends_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    multiplier: Mapped[Decimal] = mapped_column(Numeric(8, 3), nullable=False)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, server_default="{}")
    # The tier is stored by id (its rank is looked up when matching, so re-ranking tiers
    # needs no campaign edit).
    min_tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
