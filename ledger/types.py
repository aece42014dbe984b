"""Plain result types of the ledger service (no ORM objects leave the service)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Posted:
    """The outcome of a value-moving operation. ``replayed``: the idempotency key had been
    used with the same input before, this is the stored transaction and nothing moved."""

    transaction_id: int
    created_at: datetime
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One set-based settlement batch: how many rows it settled and their total amount.
    ``candidates`` is how many it looked at (others were settled concurrently meanwhile)."""

    count: int
    amount: int
    candidates: int


@dataclass(frozen=True, slots=True)
class Settlement:
    count: int = 0
    amount: int = 0
    batches: int = 0


@dataclass(frozen=True, slots=True)
class BatchGrant:
    """One entry of :func:`ledger.service.post_batch` (an import)."""

    member_id: int
    amount: int
    idempotency_key: str
    currency: str = "points"
    memo: str | None = None
    reference: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Balances:
    available: int
    pending: int


@dataclass(frozen=True, slots=True)
class ExpiringLot:
    amount: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    cursor: int  # the posting id; pass it as ``after`` for the next (older) page
    transaction_id: int
    amount: int
    currency: str
    kind: str
    memo: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class PostingView:
    account_key: str
    member_id: int | None
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class TransactionView:
    id: int
    kind: str
    memo: str | None
    reference: str | None
    metadata: dict[str, Any]
    member_id: int | None
    idempotency_key: str | None
    reverses_id: int | None
    reversed_by_id: int | None
    created_at: datetime
    postings: list[PostingView] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """Per currency. ``issued`` is net of voids and reversed grants; ``outstanding`` is what
    members hold (available + pending), so issued = outstanding + spent + expired."""

    currency: str
    issued: int
    spent: int
    expired: int
    outstanding: int
    pending: int
