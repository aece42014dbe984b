"""The redemption catalogue: items, coupon code pools, redemptions, lottery entries and draws.

Migration ``0006_redemptions`` creates exactly these tables (a test compares the two).

- ``catalog_items.stock`` is the number of units still available (NULL: unlimited). A CHECK
  keeps it from going negative, so even a faulty statement could not oversell.
- ``coupon_codes.redemption_id`` is unique: a code belongs to at most one redemption at a time,
  and a redemption holds at most one code.
- ``redemptions`` are unique by (member, idempotency key), so a retried ``redeem`` can never
  create a second redemption.
- ``lottery_entries`` hold one row per ticket; ``lottery_draws`` one row per lottery (the item
  id is the primary key: a lottery is drawn once), with the seed that decided it.

``redemptions.item_id`` and ``lottery_entries.item_id`` carry no foreign key on purpose: a
foreign key check takes a KEY SHARE lock on the referenced row, and every redemption of a
popular item would pile MultiXact lockers onto that one hot row (the ledger avoids the same
trap on its issuance account). Items are never deleted (there is no way to), and the
redemption path resolves the item id in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, created_at_column

ITEM_KINDS = ("REWARD", "COUPON", "LOTTERY")
REDEMPTION_STATUSES = ("PENDING", "FULFILLED", "CANCELLED")
ENTRY_STATUSES = ("ACTIVE", "CANCELLED", "WON", "LOST")


class CatalogItem(Base):
    __tablename__ = "catalog_items"
    __table_args__ = (
        CheckConstraint("kind IN ('REWARD', 'COUPON', 'LOTTERY')", name="kind_known"),
        CheckConstraint("cost > 0 AND cost <= 1000000000", name="cost_in_range"),
        CheckConstraint("stock IS NULL OR stock >= 0", name="stock_non_negative"),
        CheckConstraint(
            "per_member_limit IS NULL OR per_member_limit > 0", name="per_member_limit_positive"
        ),
        CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_from < available_until",
            name="window_ordered",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, server_default="REWARD")
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False)
    stock: Mapped[int | None] = mapped_column(BigInteger)
    per_member_limit: Mapped[int | None] = mapped_column(Integer)
    min_tier_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("tiers.id"))
    available_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    available_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    visible: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # LOTTERY: set in the draw's transaction; entries are refused from then on.
    drawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = created_at_column()


class CouponCode(Base):
    """One code of a COUPON item's pool. Unassigned while ``redemption_id`` is NULL."""

    __tablename__ = "coupon_codes"
    __table_args__ = (
        UniqueConstraint("item_id", "code", name="uq_coupon_codes_item_id_code"),
        Index(
            "ix_coupon_codes_unassigned",
            "item_id",
            "id",
            postgresql_where=text("redemption_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("catalog_items.id"), nullable=False)
    code: Mapped[str] = mapped_column(String(255), nullable=False)
    redemption_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("redemptions.id"), unique=True
    )
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        CheckConstraint("status IN ('PENDING', 'FULFILLED', 'CANCELLED')", name="status_known"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("cost > 0 AND cost <= 1000000000", name="cost_in_range"),
        UniqueConstraint(
            "member_id", "idempotency_key", name="uq_redemptions_member_id_idempotency_key"
        ),
        Index("ix_redemptions_member_id_id", "member_id", "id"),
        Index("ix_redemptions_item_id_id", "item_id", "id"),
        Index("ix_redemptions_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    item_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # no FK: see the module
    quantity: Mapped[int] = mapped_column(Integer, nullable=False)
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False)  # points spent, all units
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="PENDING")
    idempotency_key: Mapped[str] = mapped_column(String(255), nullable=False)
    input_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    spend_transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("transactions.id"), nullable=False
    )
    refund_transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("transactions.id")
    )
    # When the coupon code was first shown to the member (see redemptions.service).
    code_revealed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    fulfilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


class LotteryEntry(Base):
    """One ticket. ACTIVE until the draw (WON or LOST) or its redemption is cancelled."""

    __tablename__ = "lottery_entries"
    __table_args__ = (
        CheckConstraint("status IN ('ACTIVE', 'CANCELLED', 'WON', 'LOST')", name="status_known"),
        Index("ix_lottery_entries_item_id_id", "item_id", "id"),
        Index("ix_lottery_entries_redemption_id", "redemption_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, nullable=False)  # no FK: see the module
    redemption_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("redemptions.id"), nullable=False
    )
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="ACTIVE")
    created_at: Mapped[datetime] = created_at_column()


class LotteryDraw(Base):
    """The record that lets anyone re-derive a draw: the seed, the entries it saw (count and
    digest) and how many winners were asked for (see ``redemptions.lottery``)."""

    __tablename__ = "lottery_draws"
    __table_args__ = (CheckConstraint("winners_requested > 0", name="winners_requested_positive"),)

    item_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("catalog_items.id"), primary_key=True
    )
    seed: Mapped[str] = mapped_column(String(64), nullable=False)
    method: Mapped[str] = mapped_column(String(64), nullable=False)
    winners_requested: Mapped[int] = mapped_column(Integer, nullable=False)
    entry_count: Mapped[int] = mapped_column(Integer, nullable=False)
    entries_digest: Mapped[str] = mapped_column(String(64), nullable=False)
    drawn_at: Mapped[datetime] = created_at_column()
