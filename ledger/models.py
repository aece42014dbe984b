"""Ledger tables: currencies, accounts, transactions, postings, lots and pending credits.

The value-moving logic lives in PL/pgSQL functions created by migration ``0002`` (see
``ledger/service.py`` for why); these models describe the tables for Alembic, reads and tests.
Migration ``0002_ledger`` creates exactly these tables; a test compares the two.

Balances:
- bounded accounts (``allow_negative`` false: every member account, and any future budget
  account) keep a stored ``balance``, updated under a row lock in the same transaction as the
  postings; a CHECK makes the database itself refuse a negative bounded balance.
- unbounded system accounts (issuance, sinks: ``allow_negative`` true) keep no running balance:
  their ``balance`` column stays 0 and their balance is the sum of their postings, so thousands
  of concurrent grants never queue on one hot row.
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
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, created_at_column


class Currency(Base):
    """A unit of value: ``points`` are spent and expire; ``xp`` is earned, never spent or lost."""

    __tablename__ = "currencies"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    spendable: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    expiring: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    created_at: Mapped[datetime] = created_at_column()


class Account(Base):
    """``member:<id>:<currency>`` (available), ``member:<id>:<currency>:pending`` and
    ``system:<kind>:<currency>`` (issuance, redemptions, expired, adjustments)."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint("allow_negative OR balance >= 0", name="balance_non_negative"),
        Index("ix_accounts_member_id", "member_id"),
        # room on every page, so a balance update stays a HOT update (no index writes)
        {"postgresql_with": {"fillfactor": 80}},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    member_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("members.id"))
    currency: Mapped[str] = mapped_column(String(32), ForeignKey("currencies.key"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    allow_negative: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    created_at: Mapped[datetime] = created_at_column()


class LedgerTransaction(Base):
    """One business event. Never updated or deleted; corrections are reversals.

    ``member_id`` is denormalised for reading (no foreign key: the member accounts already carry
    one). ``reverses_id`` is unique, so a transaction is reversed at most once; the unique index
    is partial because almost every row has no ``reverses_id``.
    """

    __tablename__ = "transactions"
    __table_args__ = (
        Index(
            "uq_transactions_reverses_id",
            "reverses_id",
            unique=True,
            postgresql_where=text("reverses_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    memo: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    reference: Mapped[str | None] = mapped_column(Text)
    member_id: Mapped[int | None] = mapped_column(BigInteger)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    input_hash: Mapped[str | None] = mapped_column(String(64))
    reverses_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("transactions.id"))
    created_at: Mapped[datetime] = created_at_column()


class Posting(Base):
    """One leg of a transaction: a signed amount on one account. Per transaction and currency
    the postings sum to zero.

    Postings, lots and lot allocations carry no foreign keys on purpose. A foreign key check is
    a query plus a KEY SHARE row lock per inserted row; on these append-mostly tables that was
    about a fifth of the cost of a grant and a sixth of a transfer, and ``account_id`` would
    pile MultiXact lockers onto the one hot issuance row. These rows are written only by the
    ledger functions (which resolve every id first), and ``ledger verify`` checks that every
    posting, lot and allocation points at a row that exists.
    """

    __tablename__ = "postings"
    __table_args__ = (
        # The primary key leads with transaction_id: it is also the index for "postings of a
        # transaction", one B-tree instead of two on the hottest table.
        PrimaryKeyConstraint("transaction_id", "id", name="pk_postings"),
        CheckConstraint("amount <> 0", name="amount_non_zero"),
        Index("ix_postings_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity())
    transaction_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    account_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(32), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = created_at_column()


class Lot(Base):
    """A credit of a member's available account, consumed soonest-expiring first.

    Invariants (checked by ``ledger verify``): per available account, ``sum(remaining)`` equals
    the stored balance; per lot, ``amount = remaining + expired + sum(allocations)``.
    ``expired`` is how much of this lot sits in the currency's expired account.
    """

    __tablename__ = "lots"
    __table_args__ = (
        CheckConstraint("amount > 0 AND amount <= 1000000000", name="amount_in_range"),
        CheckConstraint("remaining >= 0 AND remaining <= amount", name="remaining_in_range"),
        CheckConstraint("expired >= 0 AND expired <= amount", name="expired_in_range"),
        Index(
            "ix_lots_open_by_account",
            "account_id",
            "expires_at",
            "id",
            postgresql_where=text("remaining > 0"),
        ),
        Index(
            "ix_lots_open_by_expiry",
            "expires_at",
            postgresql_where=text("remaining > 0 AND expires_at IS NOT NULL"),
        ),
        # Only reversing a credit looks lots up by transaction. Lots are appended in about
        # transaction order, so a BRIN index finds them while costing nearly nothing to keep.
        Index(
            "ix_lots_transaction_id",
            "transaction_id",
            postgresql_using="brin",
            postgresql_with={"pages_per_range": 16},
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    transaction_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    remaining: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expired: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class LotAllocation(Base):
    """How much one transaction took out of one lot (negative: put back by a reversal)."""

    __tablename__ = "lot_allocations"

    transaction_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lot_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)


class PendingCredit(Base):
    """A two-phase credit (return window): issued to the pending account, then vested into the
    available account after ``available_at`` or voided back to issuance. Keyed by the
    ``pending_credit`` transaction; ``status`` moves from ``pending`` exactly once."""

    __tablename__ = "pending_credits"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'vested', 'voided')", name="status_known"),
        Index(
            "ix_pending_credits_due",
            "available_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    transaction_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("transactions.id"), primary_key=True
    )
    member_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("members.id"), nullable=False)
    currency: Mapped[str] = mapped_column(String(32), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    lot_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lot_lifetime_days: Mapped[int | None] = mapped_column(Integer)
    settled_transaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("transactions.id"), unique=True
    )
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
