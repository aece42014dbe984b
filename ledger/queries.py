"""Read side of the ledger: balances, expiring lots, history, transactions, summary.

Plain SQLAlchemy Core over the models; none of these lock anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledger.errors import INVALID_INPUT, LedgerError
from ledger.models import Account, LedgerTransaction, Lot, Posting
from ledger.types import (
    Balances,
    ExpiringLot,
    HistoryEntry,
    HistoryPage,
    LedgerSummary,
    PostingView,
    TransactionView,
)
from server import rawsql

MAX_PAGE = 100


# Available = stored balance minus points whose lot is past ``expires_at`` but not settled
# yet (they can no longer be spent); pending = the pending account's balance. Hot (every
# ``me``), so plain SQL on the raw connection.
AVAILABLE_SQL = """sum(CASE WHEN a.kind = 'available' THEN a.balance - coalesce(
        (SELECT sum(l.remaining) FROM lots l
         WHERE l.account_id = a.id AND l.remaining > 0 AND l.expires_at <= now()), 0)
    ELSE 0 END)"""
PENDING_SQL = "sum(CASE WHEN a.kind = 'pending' THEN a.balance ELSE 0 END)"
BALANCES_SQL = f"""
SELECT a.member_id, a.currency, {AVAILABLE_SQL} AS available, {PENDING_SQL} AS pending
FROM accounts a
WHERE a.member_id = any($1::bigint[]) AND a.currency = any($2::text[])
GROUP BY a.member_id, a.currency
"""


async def balances_for_members(
    session: rawsql.Queryable, member_ids: Sequence[int], currency: str = "points"
) -> dict[int, Balances]:
    """Available and pending, per member; members without accounts get zeros. One query for
    any number of members."""
    found = await balances_for_keys(session, [(member_id, currency) for member_id in member_ids])
    return {member_id: found[(member_id, currency)] for member_id in member_ids}


async def balances_for_keys(
    session: rawsql.Queryable, keys: Sequence[tuple[int, str]]
) -> dict[tuple[int, str], Balances]:
    """Balances for (member id, currency) pairs, zeros where there is no account: one query
    for any number of members and currencies (the DataLoader behind ``Member.balance``)."""
    if not keys:
        return {}
    members = sorted({member_id for member_id, _ in keys})
    currencies = sorted({currency for _, currency in keys})
    rows = await rawsql.fetch(session, BALANCES_SQL, members, currencies)
    found = {
        (row["member_id"], row["currency"]): Balances(int(row["available"]), int(row["pending"]))
        for row in rows
    }
    return {key: found.get(key, Balances(0, 0)) for key in keys}


async def balances(session: AsyncSession, member_id: int, currency: str = "points") -> Balances:
    return (await balances_for_members(session, [member_id], currency))[member_id]


async def expiring_lots_for_members(
    session: AsyncSession,
    member_ids: Sequence[int],
    within_days: int = 30,
    currency: str = "points",
    now: datetime | None = None,
) -> dict[int, list[ExpiringLot]]:
    """Points that will expire within ``within_days`` (not those already past due), summed
    per expiry moment, soonest first, for each member. One query for any number of members."""
    if within_days < 0 or within_days > 36_500:
        raise LedgerError(INVALID_INPUT, "withinDays must be between 0 and 36500", "withinDays")
    found: dict[int, list[ExpiringLot]] = {member_id: [] for member_id in member_ids}
    if not member_ids:
        return found
    start = now or datetime.now(UTC)
    rows = await session.execute(
        select(Account.member_id, Lot.expires_at, func.sum(Lot.remaining).label("amount"))
        .join(Account, Account.id == Lot.account_id)
        .where(
            Account.member_id.in_(list(member_ids)),
            Account.currency == currency,
            Account.kind == "available",
            Lot.remaining > 0,
            Lot.expires_at > start,
            Lot.expires_at <= start + timedelta(days=within_days),
        )
        .group_by(Account.member_id, Lot.expires_at)
        .order_by(Account.member_id, Lot.expires_at)
    )
    for row in rows:
        found[row.member_id].append(ExpiringLot(int(row.amount), row.expires_at))
    return found


async def expiring_lots(
    session: AsyncSession,
    member_id: int,
    within_days: int = 30,
    currency: str = "points",
    now: datetime | None = None,
) -> list[ExpiringLot]:
    found = await expiring_lots_for_members(session, [member_id], within_days, currency, now)
    return found[member_id]


async def history(
    session: AsyncSession,
    member_id: int,
    *,
    currency: str | None = None,
    first: int = 20,
    after: int | None = None,
    include_pending: bool = False,
) -> HistoryPage:
    """The member's postings, newest first, keyset-paginated on the posting id (``after``:
    the ``cursor`` of the last entry of the previous page). Available accounts only unless
    ``include_pending``."""
    if first < 0 or first > MAX_PAGE:
        raise LedgerError(INVALID_INPUT, f"first must be between 0 and {MAX_PAGE}", "first")
    kinds = ["available", "pending"] if include_pending else ["available"]
    accounts = select(Account.id).where(Account.member_id == member_id, Account.kind.in_(kinds))
    if currency is not None:
        accounts = accounts.where(Account.currency == currency)
    query = (
        select(
            Posting.id,
            Posting.transaction_id,
            Posting.amount,
            Posting.currency,
            LedgerTransaction.kind,
            LedgerTransaction.memo,
            LedgerTransaction.created_at,
        )
        .join(LedgerTransaction, LedgerTransaction.id == Posting.transaction_id)
        .where(Posting.account_id.in_(accounts.scalar_subquery()))
        .order_by(Posting.id.desc())
        .limit(first + 1)
    )
    if after is not None:
        query = query.where(Posting.id < after)
    rows = (await session.execute(query)).all()
    entries = [
        HistoryEntry(r.id, r.transaction_id, r.amount, r.currency, r.kind, r.memo, r.created_at)
        for r in rows[:first]
    ]
    return HistoryPage(entries, has_next_page=len(rows) > first)


async def get_transaction(session: AsyncSession, transaction_id: int) -> TransactionView | None:
    reversal = LedgerTransaction.__table__.alias("reversal")
    row = (
        await session.execute(
            select(LedgerTransaction, reversal.c.id.label("reversed_by_id"))
            .outerjoin(reversal, reversal.c.reverses_id == LedgerTransaction.id)
            .where(LedgerTransaction.id == transaction_id)
        )
    ).first()
    if row is None:
        return None
    tx: LedgerTransaction = row[0]
    postings = await session.execute(
        select(Account.key, Account.member_id, Posting.currency, Posting.amount)
        .join(Account, Account.id == Posting.account_id)
        .where(Posting.transaction_id == transaction_id)
        .order_by(Posting.id)
    )
    return TransactionView(
        id=tx.id,
        kind=tx.kind,
        memo=tx.memo,
        reference=tx.reference,
        metadata=dict(tx.meta or {}),
        member_id=tx.member_id,
        idempotency_key=tx.idempotency_key,
        reverses_id=tx.reverses_id,
        reversed_by_id=row.reversed_by_id,
        created_at=tx.created_at,
        postings=[PostingView(p.key, p.member_id, p.currency, p.amount) for p in postings],
    )


async def ledger_summary(session: AsyncSession, currency: str = "points") -> LedgerSummary:
    """Issued (net), spent (redemptions and adjustments), expired, and what members hold.

    System balances are derived from their postings (they keep no running balance), so this
    reads every system posting of the currency: an admin report, not a hot path."""
    system = (
        select(Account.kind, func.coalesce(func.sum(Posting.amount), 0).label("total"))
        .join(Posting, Posting.account_id == Account.id)
        .where(Account.currency == currency, Account.member_id.is_(None))
        .group_by(Account.kind)
    )
    totals = {row.kind: int(row.total) for row in await session.execute(system)}
    held = (
        await session.execute(
            select(
                func.coalesce(
                    func.sum(case((Account.kind == "available", Account.balance), else_=0)), 0
                ),
                func.coalesce(
                    func.sum(case((Account.kind == "pending", Account.balance), else_=0)), 0
                ),
            ).where(
                Account.currency == currency,
                Account.member_id.is_not(None),
            )
        )
    ).one()
    available, pending = int(held[0]), int(held[1])
    return LedgerSummary(
        currency=currency,
        issued=-totals.get("issuance", 0),
        spent=totals.get("redemptions", 0) + totals.get("adjustments", 0),
        expired=totals.get("expired", 0),
        outstanding=available + pending,
        pending=pending,
    )


__all__ = [
    "balances",
    "balances_for_keys",
    "balances_for_members",
    "expiring_lots",
    "expiring_lots_for_members",
    "get_transaction",
    "history",
    "ledger_summary",
]
