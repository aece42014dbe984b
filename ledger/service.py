"""Ledger operations: plain async functions taking an ``AsyncSession``. They never commit;
the caller owns the transaction (``runtime.transaction()``, a request, a task).

How it stays correct and fast
-----------------------------
Each value-moving operation is one call of a PL/pgSQL function created by migration 0002,
i.e. ONE round trip. Inside the function, under READ COMMITTED, every statement takes a fresh
snapshot, so "lock the member account, then read its lots" sees the work of whoever held the
lock before (sibling CTEs of a single statement would share one stale snapshot instead).

- Member accounts are locked ``FOR NO KEY UPDATE`` in ascending id order (a transfer locks
  both; settlement locks every account of its batch), so no two ledger operations deadlock.
- The issuance account and the sinks (redemptions, expired, adjustments) are never locked and
  keep no running balance: their balance is the sum of their postings. A grant therefore
  writes one transaction, two postings, one lot and one member-balance update, and contends
  only on its own member's row.
- Idempotency: the transaction row carries the key (unique) and a SHA-256 of the input.
  Every operation claims the key with ``INSERT .. ON CONFLICT DO NOTHING`` in its one write
  statement (debits after taking the member lock, so a twin for the same member has committed
  by then; a twin elsewhere is waited for by the insert). Nothing claimed: the stored row
  answers. Same key and input: the stored transaction comes back (``Posted.replayed``) and
  nothing moves. Same key, other input: ``IDEMPOTENCY_CONFLICT``.
- Failures: the SQL functions check everything before their first write and return a status
  word; this module raises :class:`LedgerError` for it. Nothing has been written then, and
  the caller's transaction is still usable (it may roll back or carry on).

Rules worth knowing (the SQL of migration 0002 has the details)
- Spends, deducts and transfers consume unexpired lots soonest-expiring first (lots without
  expiry last, then oldest first). Points whose lot has passed ``expires_at`` cannot be spent
  even before settlement has moved them; :func:`balances` does not count them either.
- A transfer carries the expiry of the consumed lots over to new lots of the receiver.
- Reversal restores exactly the lots the original consumed; the part of a lot that has
  expired meanwhile goes straight to the expired account in the same reversal, so the member
  never sees expired points again. Reversing a credit takes back from the credit's own lots
  first (their remaining, then their expired part back out of the expired account), then from
  the member's other lots soonest-expiring first; it never drives a balance negative
  (``INSUFFICIENT_FUNDS``). Reversals, expiries, pending credits, vests and voids cannot be
  reversed (``CONFLICT``); a second reversal is ``ALREADY_DONE``.
- Settlement never runs ahead of the clock (``as_of`` is clamped to now), so a lot it expired
  stays expired for every later reversal and its key ``expire:lot:<id>`` is used once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from ledger._calls import (
    aware,
    check_amount,
    check_currency,
    check_days,
    check_key,
    fetch,
    fetchrow,
    input_hash,
    metadata_json,
)
from ledger.errors import INVALID_INPUT, LedgerError, error_for_status
from ledger.queries import (
    balances,
    balances_for_keys,
    balances_for_members,
    expiring_lots,
    expiring_lots_for_members,
    get_transaction,
    history,
    ledger_summary,
)
from ledger.types import BatchGrant, BatchOutcome, Posted, Settlement
from server import signals
from server.signals import Target as SignalTarget

__all__ = [
    "balances",
    "balances_for_keys",
    "balances_for_members",
    "credit_pending",
    "deduct",
    "drain",
    "expiring_lots",
    "expiring_lots_for_members",
    "get_transaction",
    "grant",
    "history",
    "ledger_summary",
    "post_batch",
    "reverse",
    "settle_expirations",
    "settle_expirations_batch",
    "spend",
    "transfer",
    "vest",
    "vest_pending",
    "vest_pending_batch",
    "void",
]

DEFAULT_BATCH_SIZE = 5000

_GRANT = (
    "SELECT o_status, o_tx, o_created_at"
    " FROM ledger_grant($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
_DEBIT = (
    "SELECT o_status, o_tx, o_created_at FROM ledger_debit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
_TRANSFER = (
    "SELECT o_status, o_tx, o_created_at FROM ledger_transfer($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_PENDING = (
    "SELECT o_status, o_tx, o_created_at"
    " FROM ledger_pending_credit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
_SETTLE_PENDING = "SELECT o_status, o_tx, o_created_at FROM ledger_settle_pending($1, $2)"
_REVERSE = "SELECT o_status, o_tx, o_created_at FROM ledger_reverse($1, $2, $3, $4, $5, $6)"
_SETTLE = (
    "SELECT o_lots, o_amount, o_candidates, o_transactions FROM ledger_settle_expirations($1, $2)"
)
_VEST_DUE = "SELECT o_count, o_amount, o_candidates, o_transactions FROM ledger_vest_due($1, $2)"
_BATCH = (
    "SELECT o_index, o_status, o_tx, o_created_at"
    " FROM ledger_post_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)

# Emitted (delivered after commit) for every new credit of a member's available balance by
# ``grant`` and ``post_batch``: leaderboards and live updates listen to it.
CREDITED = "points.credited"
# Emitted once per settlement batch with the ``expire`` transactions it wrote (``transactions``,
# a list of ids): the webhooks' durable writer turns them into points.expired events in the
# same transaction (webhooks.outbox).
EXPIRED = "points.expired"
# Emitted (delivered after commit) when value moves on members' available balances other than
# by a credit from issuance (those are CREDITED): spends, deductions, transfers, vests, voids,
# reversals and expiry. ``changes``: (member id, currency, delta) where the operation knows
# them; ``transactions``: ids whose member postings the listener looks up. Live updates
# (``memberUpdates``) listen to it.
MOVED = "points.moved"


def credited(
    target: signals.Target, member_id: int, currency: str, amount: int, kind: str, posted: Posted
) -> None:
    """Announce (``CREDITED``) a new credit of a member's available balance from issuance."""
    signals.emit(
        target,
        CREDITED,
        member_id=member_id,
        currency=currency,
        amount=amount,
        kind=kind,
        transaction_id=posted.transaction_id,
        at=posted.created_at,
    )


def _posted(row: Any, *, not_found_field: str | None = None) -> Posted:
    status = row["o_status"]
    if status == "ok":
        return Posted(row["o_tx"], row["o_created_at"], replayed=False)
    if status == "replay":
        return Posted(row["o_tx"], row["o_created_at"], replayed=True)
    raise error_for_status(status, not_found_field=not_found_field)


async def grant(
    session: AsyncSession,
    member_id: int,
    amount: int,
    *,
    idempotency_key: str,
    currency: str = "points",
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
    lifetime_days: int | None = None,
    kind: str = "grant",
) -> Posted:
    """Issue ``amount`` to the member's available account as a new lot. The lot expires at
    ``expires_at``, else ``lifetime_days`` from now (the program's ``pointsLifetimeDays``,
    passed by the caller), else never; currencies that never expire (xp) get no expiry."""
    check_amount(amount)
    check_key(idempotency_key)
    check_currency(currency)
    check_days(lifetime_days, "lifetimeDays")
    expires_at = aware(expires_at)
    meta = metadata_json(metadata)
    digest = input_hash(
        "grant",
        {
            "member": member_id,
            "amount": amount,
            "currency": currency,
            "memo": memo,
            "reference": reference,
            "metadata": metadata,
            "expires_at": expires_at,
            "lifetime_days": lifetime_days,
            "kind": kind,
        },
    )
    row = await fetchrow(
        session,
        _GRANT,
        member_id,
        currency,
        amount,
        kind,
        memo,
        reference,
        meta,
        idempotency_key,
        digest,
        expires_at,
        lifetime_days,
    )
    posted = _posted(row)
    if not posted.replayed:
        credited(session, member_id, currency, amount, kind, posted)
    return posted


class DebitArguments(NamedTuple):
    """``ledger_debit``'s parameters, in its order."""

    member_id: int
    currency: str
    amount: int
    kind: str
    sink: str
    memo: str | None
    reference: str | None
    metadata: str | None  # JSON
    key: str
    digest: str  # the input hash stored with the key


def debit_arguments(
    operation: str,
    sink: str,
    member_id: int,
    amount: int,
    idempotency_key: str,
    currency: str,
    memo: str | None,
    reference: str | None,
    metadata: Mapping[str, Any] | None,
) -> DebitArguments:
    """The checked arguments of ``ledger_debit`` for a spend or a deduction, with the input
    hash of those arguments. (A redemption spends inside its own statement and builds its
    ``DebitArguments`` itself: its hash is of the request, see ``redemptions.service``.)"""
    check_amount(amount)
    check_key(idempotency_key)
    check_currency(currency)
    meta = metadata_json(metadata)
    digest = input_hash(
        operation,
        {
            "member": member_id,
            "amount": amount,
            "currency": currency,
            "memo": memo,
            "reference": reference,
            "metadata": metadata,
        },
    )
    return DebitArguments(
        member_id, currency, amount, operation, sink, memo, reference, meta, idempotency_key,
        digest,
    )  # fmt: skip


def debited(session: SignalTarget, row: Any, arguments: DebitArguments) -> Posted:
    """The outcome of a ``ledger_debit`` call with ``arguments`` (its ``o_status``, ``o_tx``,
    ``o_created_at`` columns): raises for a refusal, emits MOVED for a new debit."""
    posted = _posted(row)
    if not posted.replayed:
        changes = [(arguments.member_id, arguments.currency, -arguments.amount)]
        _moved(session, posted, changes=changes)
    return posted


async def _debit(session: AsyncSession, arguments: DebitArguments) -> Posted:
    row = await fetchrow(session, _DEBIT, *arguments)
    return debited(session, row, arguments)


def _moved(
    session: SignalTarget,
    posted: Posted | None,
    *,
    changes: Sequence[tuple[int, str, int]] = (),
    transactions: Sequence[int] = (),
) -> None:
    """Emit MOVED (the one place its payload is made): for ``posted``, or for a batch."""
    signals.emit(
        session,
        MOVED,
        changes=list(changes),
        transactions=list(transactions),
        transaction_id=posted.transaction_id if posted else None,
        at=posted.created_at if posted else datetime.now(UTC),
    )


async def spend(
    session: AsyncSession,
    member_id: int,
    amount: int,
    *,
    idempotency_key: str,
    currency: str = "points",
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Posted:
    """A member spends points (redemptions): member -> ``system:redemptions:<currency>``."""
    arguments = debit_arguments(
        "spend", "redemptions", member_id, amount, idempotency_key, currency, memo, reference,
        metadata,
    )  # fmt: skip
    return await _debit(session, arguments)


async def deduct(
    session: AsyncSession,
    member_id: int,
    amount: int,
    *,
    idempotency_key: str,
    currency: str = "points",
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Posted:
    """An admin correction: member -> ``system:adjustments:<currency>`` (works for xp too)."""
    arguments = debit_arguments(
        "deduct", "adjustments", member_id, amount, idempotency_key, currency, memo, reference,
        metadata,
    )  # fmt: skip
    return await _debit(session, arguments)


async def transfer(
    session: AsyncSession,
    from_member_id: int,
    to_member_id: int,
    amount: int,
    *,
    idempotency_key: str,
    currency: str = "points",
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Posted:
    """Member to member; the receiver's new lots keep the sender's expiry dates."""
    check_amount(amount)
    check_key(idempotency_key)
    check_currency(currency)
    meta = metadata_json(metadata)
    digest = input_hash(
        "transfer",
        {
            "from": from_member_id,
            "to": to_member_id,
            "amount": amount,
            "currency": currency,
            "memo": memo,
            "reference": reference,
            "metadata": metadata,
        },
    )
    row = await fetchrow(
        session,
        _TRANSFER,
        from_member_id,
        to_member_id,
        currency,
        amount,
        memo,
        reference,
        meta,
        idempotency_key,
        digest,
    )
    posted = _posted(row)
    if not posted.replayed:
        _moved(
            session,
            posted,
            changes=[(from_member_id, currency, -amount), (to_member_id, currency, amount)],
        )
    return posted


async def credit_pending(
    session: AsyncSession,
    member_id: int,
    amount: int,
    *,
    idempotency_key: str,
    available_at: datetime | None = None,
    pending_days: int | None = None,
    currency: str = "points",
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
    lifetime_days: int | None = None,
) -> Posted:
    """Credit the member's pending account (a return window). It becomes available at
    ``available_at`` (else after ``pending_days``) when :func:`vest_pending` runs, unless
    :func:`void` cancels it first. The vested lot expires at ``expires_at``, else
    ``lifetime_days`` after ``available_at``, else never."""
    check_amount(amount)
    check_key(idempotency_key)
    check_currency(currency)
    check_days(lifetime_days, "lifetimeDays")
    check_days(pending_days, "pendingDays")
    available_at = aware(available_at, "availableAt")
    expires_at = aware(expires_at)
    if available_at is None:
        if pending_days is None:
            raise LedgerError(INVALID_INPUT, "give availableAt or pendingDays", "pendingDays")
        available_at = datetime.now(UTC) + timedelta(days=pending_days)
    meta = metadata_json(metadata)
    digest = input_hash(
        "pending_credit",
        {
            "member": member_id,
            "amount": amount,
            "currency": currency,
            "memo": memo,
            "reference": reference,
            "metadata": metadata,
            # a retry computes a new available_at from pending_days: hash the rule, not it
            "available_at": available_at if pending_days is None else None,
            "pending_days": pending_days,
            "expires_at": expires_at,
            "lifetime_days": lifetime_days,
        },
    )
    row = await fetchrow(
        session,
        _PENDING,
        member_id,
        currency,
        amount,
        available_at,
        expires_at,
        lifetime_days,
        memo,
        reference,
        meta,
        idempotency_key,
        digest,
    )
    return _posted(row)


async def vest(session: AsyncSession, pending_transaction_id: int) -> Posted:
    """Make one pending credit available now (keyed ``vest:<id>``; happens once)."""
    row = await fetchrow(session, _SETTLE_PENDING, pending_transaction_id, "vest")
    return _announced(session, _posted(row, not_found_field="transactionId"))


async def void(session: AsyncSession, pending_transaction_id: int) -> Posted:
    """Cancel one pending credit (refund): pending -> issuance, keyed ``void:<id>``."""
    row = await fetchrow(session, _SETTLE_PENDING, pending_transaction_id, "void")
    return _announced(session, _posted(row, not_found_field="transactionId"))


def _announced(session: AsyncSession, posted: Posted) -> Posted:
    """``posted`` moved value on accounts the listener looks up (see MOVED)."""
    if not posted.replayed:
        _moved(session, posted, transactions=[posted.transaction_id])
    return posted


async def reverse(
    session: AsyncSession,
    transaction_id: int,
    *,
    memo: str | None = None,
    reference: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Posted:
    """Reverse a transaction once (see the module docstring for the lot rules)."""
    if idempotency_key is not None:
        check_key(idempotency_key)
    meta = metadata_json(metadata)
    digest = input_hash(
        "reverse",
        {"transaction": transaction_id, "memo": memo, "reference": reference, "metadata": metadata},
    )
    row = await fetchrow(
        session, _REVERSE, transaction_id, memo, reference, meta, idempotency_key, digest
    )
    return _announced(session, _posted(row, not_found_field="transactionId"))


async def settle_expirations_batch(
    session: AsyncSession, as_of: datetime | None = None, limit: int = DEFAULT_BATCH_SIZE
) -> BatchOutcome:
    """Expire at most ``limit`` lots due by ``as_of`` (default and upper bound: now), in one
    set-based statement: one ``expire`` transaction per lot, keyed ``expire:lot:<id>``."""
    row = await fetchrow(session, _SETTLE, as_of_or_now(as_of), limit)
    if row["o_transactions"]:
        expired = list(row["o_transactions"])
        signals.emit(session, EXPIRED, transactions=expired)
        _moved(session, None, transactions=expired)
    return BatchOutcome(row["o_lots"], row["o_amount"], row["o_candidates"])


async def settle_expirations(
    session: AsyncSession,
    as_of: datetime | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
) -> Settlement:
    """Settle every due lot in the caller's transaction, batch after batch. Workers prefer
    ``ledger.tasks.run_settle_expirations``, which commits after each batch. Stops when a batch
    settles nothing (a concurrent settler took those lots)."""
    return await drain(partial(settle_expirations_batch, session), as_of, batch_size, max_batches)


async def vest_pending_batch(
    session: AsyncSession, as_of: datetime | None = None, limit: int = DEFAULT_BATCH_SIZE
) -> BatchOutcome:
    """Vest at most ``limit`` pending credits due by ``as_of`` (default and upper bound: now)."""
    row = await fetchrow(session, _VEST_DUE, as_of_or_now(as_of), limit)
    if row["o_transactions"]:
        _moved(session, None, transactions=row["o_transactions"])
    return BatchOutcome(row["o_count"], row["o_amount"], row["o_candidates"])


async def vest_pending(
    session: AsyncSession,
    as_of: datetime | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
) -> Settlement:
    """Vest every due pending credit in the caller's transaction, batch after batch."""
    return await drain(partial(vest_pending_batch, session), as_of, batch_size, max_batches)


async def drain(
    batch: Callable[[datetime, int], Awaitable[BatchOutcome]],
    as_of: datetime | None,
    size: int,
    max_batches: int | None = None,
) -> Settlement:
    """Run ``batch(as_of, size)`` until a batch settles nothing or comes back short (the rest
    was taken by a concurrent settler), at most ``max_batches`` times. Where the batches
    commit is the caller's choice (``ledger.tasks`` commits each one)."""
    when = as_of_or_now(as_of)
    count = amount = batches = 0
    while max_batches is None or batches < max_batches:
        outcome = await batch(when, size)
        batches += 1
        count += outcome.count
        amount += outcome.amount
        if outcome.count == 0 or outcome.candidates < size:
            break
    return Settlement(count, amount, batches)


def as_of_or_now(as_of: datetime | None) -> datetime:
    """A settlement time: the given one (made timezone-aware) or now."""
    moment = aware(as_of, "asOf")
    return moment if moment is not None else datetime.now(UTC)


async def post_batch(
    session: AsyncSession,
    entries: Sequence[BatchGrant],
    *,
    kind: str = "import",
    lifetime_days: int | None = None,
) -> list[Posted]:
    """Post many grants in ONE round trip (imports): one transaction, two postings and a lot
    each, written set-based. All or nothing: if any entry is invalid, nothing is written and
    the first failure is raised (with its index in the message). Replayed entries (same key,
    same input) come back with ``replayed=True``."""
    if not entries:
        return []
    check_days(lifetime_days, "lifetimeDays")
    keys: set[str] = set()
    columns: list[list[Any]] = [[] for _ in range(8)]
    for index, entry in enumerate(entries):
        try:
            check_amount(entry.amount)
            check_key(entry.idempotency_key)
            check_currency(entry.currency)
            expires_at = aware(entry.expires_at)
        except LedgerError as error:
            raise LedgerError(error.code, f"entry {index}: {error.message}", error.field) from None
        if entry.idempotency_key in keys:
            raise LedgerError(
                INVALID_INPUT, f"entry {index}: idempotency key repeated", "idempotencyKey"
            )
        keys.add(entry.idempotency_key)
        digest = input_hash(
            kind,
            {
                "member": entry.member_id,
                "amount": entry.amount,
                "currency": entry.currency,
                "memo": entry.memo,
                "reference": entry.reference,
                "expires_at": expires_at,
                "lifetime_days": lifetime_days,
            },
        )
        values = (
            entry.member_id,
            entry.currency,
            entry.amount,
            entry.idempotency_key,
            digest,
            entry.memo,
            entry.reference,
            expires_at,
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    rows = await fetch(session, _BATCH, *columns, kind, lifetime_days)
    failures = [row for row in rows if row["o_status"] not in ("ok", "replay")]
    if failures:
        first = failures[0]
        refused = error_for_status(first["o_status"])
        raise LedgerError(
            refused.code,
            f"entry {first['o_index'] - 1}: {refused.message} ({len(failures)} entries refused)",
            refused.field,
        )
    posted = [
        Posted(row["o_tx"], row["o_created_at"], replayed=row["o_status"] == "replay")
        for row in rows
    ]
    for entry, result in zip(entries, posted, strict=True):
        if not result.replayed:
            credited(session, entry.member_id, entry.currency, entry.amount, kind, result)
    return posted
