"""Redemptions: plain async functions taking an ``AsyncSession``; they never commit (the
request or the task owns the transaction). The catalogue is ``redemptions.catalog``, lottery
draws ``redemptions.draws``.

Redeeming
---------
``redeem`` sends ONE statement, ``redemptions_redeem_by_key`` (migration 0017), in the
caller's transaction or on an ``Autocommit`` connection (where it is the whole transaction):

1. the lookup: the member, the item, a redemption already made with this idempotency key,
   and (for items with a per-member limit) the units the member already holds, and (for
   items with a minimum tier) whether the member's tier is high enough;
2. replay: the same key with the same input (item key, quantity) returns the stored
   redemption and moves nothing; the same key with other input is ``IDEMPOTENCY_CONFLICT``;
3. eligibility: active member, tier, window (and lottery not drawn), limit, stock. The
   statement stops there, writing nothing, when any fails; its answer carries the lookup, and
   :func:`_check_eligible` names the refusal and its code (cheapest first);
4. the writes, ``redemptions_redeem`` (migration 0014), which
   - spends through ``ledger_debit`` (idempotency key ``redeem:<member id>:<key>``): it
     locks the member's points account, consumes lots soonest-expiring first, or refuses
     with ``INSUFFICIENT_FUNDS``;
   - checks the per-member limit again, now under the account lock: every redemption of
     this member queues on that lock, so two concurrent redemptions cannot both see the last
     unit of the allowance (``QL412``, ``LIMIT_REACHED``);
   - records the member's activity (``members.service.touch``'s rule), claims a coupon code
     (``FOR UPDATE SKIP LOCKED``: concurrent redemptions never wait for each other's code and
     never get the same one; none left is ``QL413``, ``OUT_OF_STOCK``), and inserts the
     redemption and its lottery tickets; a refusal raised after the spend undoes the
     statement, spend included;
5. at COMMIT, the deferred constraint trigger ``redemptions_take_stock`` (migration 0006)
   decrements stock atomically: ``UPDATE .. SET stock = stock - q WHERE stock >= q AND
   drawn_at IS NULL``, or fails the commit (SQLSTATE ``QL410``: out of stock, ``QL411``:
   lottery drawn; :func:`database_refusal` maps them). Unlimited items are not touched.

Why at commit: a row lock lasts until the transaction ends. Taken by a statement, a popular
item's lock would also span the statement's answer travelling to the API process, that
process finding time to run, and the COMMIT travelling back, and every other redemption of
the item would queue behind that (on a busy machine: milliseconds each). Taken inside COMMIT,
it lasts for the trigger and the commit's own flush. It is still the same transaction: a
refused commit rolls everything back, the spend included. So a caller of :func:`redeem` must
expect ``OUT_OF_STOCK`` (or ``NOT_ELIGIBLE`` for a lottery drawn meanwhile) from the commit;
the stock read in step 3 refuses early in the common case. On an ``Autocommit`` connection
the statement's end is the commit, and ``redeem`` maps that refusal itself.

Any refusal raises ``DomainError`` (or fails the commit, above); the caller rolls back, so a
failure writes nothing (not even the spend of step 4). Lock order, everywhere in this module:
the member's points account first (the spend, or the reversal of a cancel), then the member
row, then the catalogue item (at commit), then the redemption and its coupon code. ``cancel``
follows the same order and the lottery draw starts at the item, so none of them can deadlock
with another.

Rules
-----
- ``cost`` is per unit, 1 to 1,000,000,000; ``cost * quantity`` above 1,000,000,000 is
  ``INVALID_INPUT``. Free items are not supported: every redemption is a ledger spend, which
  is also what serialises one member's redemptions.
- ``stock`` is the number of units still available (NULL: unlimited). ``upsertCatalogItem``
  sets it only when given, so editing an item's name never overwrites concurrent sales.
- ``perMemberLimit`` counts units (quantities) of the member's redemptions of that item that
  are not CANCELLED.
- Visibility only controls listing: a hidden item can still be redeemed by its key (unlisted
  offers); to stop redemptions, close its window (``availableUntil``).
- COUPON: one code per redemption, so quantity must be 1; running out of codes is
  ``OUT_OF_STOCK``.
- LOTTERY: ``quantity`` buys that many tickets (entries); see ``redemptions.lottery``.
- Coupon codes and cancellation: a code counts as *shown* once its ``code`` field has been
  returned to the member's own token (in the ``redeem`` payload or any later read); that
  moment is stored in ``code_revealed_at`` in the same statement that reads the code. A
  cancelled redemption gives its code back to the pool only if it was never shown; a shown
  code stays with the cancelled redemption for good (the merchant should void it). Codes read
  by admins do not count as shown.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledger import service as ledger
from ledger.errors import LedgerError
from members.service import touch
from redemptions.catalog import MAX_TOTAL_COST, get_item_by_key, whole_number
from server import signals
from server.errors import DomainError, ErrorCode, invalid, not_found
from server.rawsql import Autocommit, Queryable, driver

MAX_KEY_LENGTH = 255
MAX_QUANTITY = 1_000
MAX_REASON_LENGTH = 1_000


# --------------------------------------------------------------------------- redemptions


@dataclass(frozen=True)
class RedemptionRow:
    """A redemption as the API shows it. ``code`` is the assigned coupon code, if any: the
    GraphQL layer decides whether the caller may see it (and records that it was shown)."""

    id: int
    member_id: int
    item_id: int
    quantity: int
    cost: int
    status: str
    created_at: datetime
    code: str | None
    code_revealed_at: datetime | None
    fulfilled_at: datetime | None
    cancelled_at: datetime | None
    cancel_reason: str | None
    spend_transaction_id: int
    refund_transaction_id: int | None


@dataclass(frozen=True)
class RedeemOutcome:
    redemption: RedemptionRow
    replayed: bool  # the idempotency key had been used with the same input: nothing moved


_REDEMPTION_COLUMNS = """
    r.id, r.member_id, r.item_id, r.quantity, r.cost, r.status, r.created_at,
    c.code, r.code_revealed_at, r.fulfilled_at, r.cancelled_at, r.cancel_reason,
    r.spend_transaction_id, r.refund_transaction_id
"""
_REDEMPTION_FROM = " FROM redemptions r LEFT JOIN coupon_codes c ON c.redemption_id = r.id"


def _row(record: Any) -> RedemptionRow:
    return RedemptionRow(**dict(record))


async def get_redemption(session: Queryable, redemption_id: int) -> RedemptionRow | None:
    conn = await driver(session)
    record = await conn.fetchrow(
        f"SELECT {_REDEMPTION_COLUMNS}{_REDEMPTION_FROM} WHERE r.id = $1", redemption_id
    )
    return _row(record) if record else None


async def member_redemptions(
    session: AsyncSession, member_id: int, *, limit: int, before_id: int | None
) -> list[RedemptionRow]:
    """The member's redemptions, newest first (keyset: ids below ``before_id``)."""
    conn = await driver(session)
    records = await conn.fetch(
        f"SELECT {_REDEMPTION_COLUMNS}{_REDEMPTION_FROM}"
        " WHERE r.member_id = $1 AND ($2::bigint IS NULL OR r.id < $2)"
        " ORDER BY r.id DESC LIMIT $3",
        member_id,
        before_id,
        limit,
    )
    return [_row(record) for record in records]


async def list_redemptions(
    session: AsyncSession,
    *,
    limit: int,
    before_id: int | None,
    status: str | None = None,
    item_key: str | None = None,
) -> list[RedemptionRow]:
    """Every member's redemptions, newest first, optionally by status and item."""
    item_id: int | None = None
    if item_key is not None:
        item = await get_item_by_key(session, item_key)
        if item is None:
            raise not_found(f"no catalogue item {item_key!r}", "itemKey")
        item_id = item.id
    conn = await driver(session)
    records = await conn.fetch(
        f"SELECT {_REDEMPTION_COLUMNS}{_REDEMPTION_FROM}"
        " WHERE ($1::bigint IS NULL OR r.id < $1) AND ($2::text IS NULL OR r.status = $2)"
        " AND ($3::bigint IS NULL OR r.item_id = $3)"
        " ORDER BY r.id DESC LIMIT $4",
        before_id,
        status,
        item_id,
        limit,
    )
    return [_row(record) for record in records]


def redemption_input_hash(item_key: str, quantity: int) -> str:
    payload = json.dumps(["redeem", {"item": item_key, "quantity": quantity}], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def spend_key(member_id: int, idempotency_key: str) -> str:
    """The ledger key of a redemption's spend: scoped to the member, so two members may use
    the same key. Keys too long to prefix are hashed (a distinct prefix keeps the two forms
    from ever colliding)."""
    key = f"redeem:{member_id}:{idempotency_key}"
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return f"redeem#{member_id}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def spend_input_hash(external_id: str, item_key: str, quantity: int) -> str:
    """The input hash stored with a redemption's spend: a digest of the request, as the
    member id and the amount are only known inside the statement (a spend under a
    redemption's key is only ever made by this path, so only this form must match)."""
    payload = json.dumps(
        ["redeem-spend", {"member": external_id, "item": item_key, "quantity": quantity}],
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


# The whole redemption in ONE statement (migration 0017): the lookup (member, item, an
# earlier use of the key, the units held, the tier), eligibility, and when it passes the
# writes of redemptions_redeem (0014): the spend, the limit under the account lock, the
# member's activity (members.service.touch's rule), a coupon code, the redemption, lottery
# tickets. The lookup's columns come back too, so that a refusal is explained here.
_REDEEM = """
SELECT o_member_id AS member_id, o_member_status AS member_status, o_item_id AS item_id,
       o_name AS name, o_kind AS kind, o_cost AS cost, o_stock AS stock,
       o_per_member_limit AS per_member_limit, o_available_from AS available_from,
       o_available_until AS available_until, o_drawn_at AS drawn_at,
       o_existing_id AS existing_id, o_existing_hash AS existing_hash, o_used AS used,
       o_tier_enough AS tier_enough,
       o_status, o_tx, o_tx_at AS o_created_at, o_id, o_created_at AS created_at, o_code
FROM redemptions_redeem_by_key($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""

# What a redemption emits (a durable writer wanting one of them makes it run in a transaction).
CREATED = "redemption.created"
REDEEM_TOPICS = frozenset({CREATED, ledger.MOVED})

# SQLSTATEs raised by the stock trigger at commit (0006) and by redemptions_redeem (0014).
OUT_OF_STOCK_SQLSTATE = "QL410"
LOTTERY_DRAWN_SQLSTATE = "QL411"
LIMIT_SQLSTATE = "QL412"
NO_CODES_SQLSTATE = "QL413"


def database_refusal(error: BaseException) -> DomainError | None:
    """The domain refusal behind a failed statement or COMMIT of a redemption (the stock
    trigger, the limit, the coupon codes), if that is what it was; None for any other
    failure. Looks through SQLAlchemy's wrapping."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None)
        if state == OUT_OF_STOCK_SQLSTATE:
            return _refuse(ErrorCode.OUT_OF_STOCK, "not enough stock left", "itemKey")
        if state == LOTTERY_DRAWN_SQLSTATE:
            return _refuse(ErrorCode.NOT_ELIGIBLE, "this lottery has been drawn", "itemKey")
        if state == LIMIT_SQLSTATE:
            return _refuse(ErrorCode.LIMIT_REACHED, "the per-member limit is reached", "quantity")
        if state == NO_CODES_SQLSTATE:
            return _refuse(ErrorCode.OUT_OF_STOCK, "no coupon codes left", "itemKey")
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _refuse(code: ErrorCode, message: str, field: str | None = None) -> DomainError:
    return DomainError(code, message, field)


async def redeem(
    session: AsyncSession | Autocommit,
    *,
    external_id: str,
    item_key: str,
    quantity: int,
    idempotency_key: str,
    now: datetime | None = None,
) -> RedeemOutcome:
    """Redeem ``quantity`` units of ``item_key`` for the member (see the module docstring):
    ONE statement, which looks up, checks and writes. In a transaction, the stock is taken
    when the caller commits, and the commit may refuse it: map the error with
    :func:`database_refusal`. On an ``Autocommit`` the statement commits by itself."""
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise invalid("idempotencyKey must be 1 to 255 characters", "idempotencyKey")
    if not whole_number(quantity) or quantity < 1:
        raise invalid("quantity must be at least 1", "quantity")
    if quantity > MAX_QUANTITY:
        raise invalid("quantity too large: cost × quantity is above 1,000,000,000", "quantity")
    moment = now or datetime.now(UTC)
    digest = redemption_input_hash(item_key, quantity)
    reference = f"catalog:{item_key}"
    metadata = json.dumps({"item": item_key, "quantity": quantity})
    spend_digest = spend_input_hash(external_id, item_key, quantity)
    conn = await driver(session)
    try:
        written = await conn.fetchrow(
            _REDEEM, external_id, item_key, idempotency_key, quantity, digest, moment,
            spend_digest, reference, metadata,
        )  # fmt: skip
    except Exception as error:
        refusal = database_refusal(error)
        if refusal is None:
            raise
        raise refusal from None
    if written["member_id"] is None:
        raise not_found(f"no member with externalId {external_id!r}", "externalId")
    if written["existing_id"] is not None:
        return await _replay(conn, written["existing_id"], written["existing_hash"], digest)
    if written["item_id"] is None:
        raise not_found(f"no catalogue item {item_key!r}", "itemKey")
    if written["o_status"] is None:  # not eligible: nothing was written; say why
        _check_eligible(written, quantity, moment)
        raise RuntimeError("the statement refused a redemption that _check_eligible accepts")

    member_id: int = written["member_id"]
    total = written["cost"] * quantity
    spend = ledger.DebitArguments(
        member_id, "points", total, "spend", "redemptions", written["name"], reference,
        metadata, spend_key(member_id, idempotency_key), spend_digest,
    )  # fmt: skip
    try:
        posted = ledger.debited(session, written, spend)
    except LedgerError as error:
        field = "idempotencyKey" if error.code == ErrorCode.IDEMPOTENCY_CONFLICT else None
        raise DomainError(error.code, error.message, field) from None
    if posted.replayed:  # a twin request with this key committed while we waited
        twin = await conn.fetchrow(
            "SELECT id, input_hash FROM redemptions WHERE member_id = $1 AND idempotency_key = $2",
            member_id,
            idempotency_key,
        )
        if twin is None:
            raise _refuse(ErrorCode.CONFLICT, "this idempotency key is in use; try again")
        return await _replay(conn, twin["id"], twin["input_hash"], digest)

    redemption = RedemptionRow(
        id=written["o_id"],
        member_id=member_id,
        item_id=written["item_id"],
        quantity=quantity,
        cost=total,
        status="PENDING",
        created_at=written["created_at"],
        code=written["o_code"],
        code_revealed_at=None,
        fulfilled_at=None,
        cancelled_at=None,
        cancel_reason=None,
        spend_transaction_id=posted.transaction_id,
        refund_transaction_id=None,
    )
    _emit(session, CREATED, redemption, item_key=item_key)
    return RedeemOutcome(redemption, replayed=False)


def _check_eligible(found: Any, quantity: int, moment: datetime) -> None:
    """Refusals the lookup already shows, cheapest first; nothing has been written."""
    if quantity > MAX_QUANTITY or found["cost"] * quantity > MAX_TOTAL_COST:
        raise invalid("quantity too large: cost × quantity is above 1,000,000,000", "quantity")
    if found["kind"] == "COUPON" and quantity != 1:
        raise invalid("a coupon is redeemed one at a time (quantity 1)", "quantity")
    if found["member_status"] != "active":
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "this member is suspended", "externalId")
    if found["tier_enough"] is False:  # NULL: no minimum tier (or it no longer exists)
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "the member's tier is too low", "itemKey")
    if found["available_from"] is not None and moment < found["available_from"]:
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "this item is not available yet", "itemKey")
    if found["available_until"] is not None and moment >= found["available_until"]:
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "this item is no longer available", "itemKey")
    if found["drawn_at"] is not None:
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "this lottery has been drawn", "itemKey")
    limit: int | None = found["per_member_limit"]
    if limit is not None and found["used"] + quantity > limit:
        raise _refuse(ErrorCode.LIMIT_REACHED, f"at most {limit} per member", "quantity")
    if found["stock"] is not None and found["stock"] < quantity:
        raise _refuse(ErrorCode.OUT_OF_STOCK, "not enough stock left", "itemKey")


def _emit(session: signals.Target, topic: str, row: RedemptionRow, **extra: Any) -> None:
    signals.emit(
        session,
        topic,
        redemption_id=row.id,
        member_id=row.member_id,
        item_id=row.item_id,
        quantity=row.quantity,
        cost=row.cost,
        at=row.cancelled_at or row.fulfilled_at or row.created_at,
        **extra,
    )


async def _replay(
    session: Queryable, redemption_id: int, stored_hash: str, digest: str
) -> RedeemOutcome:
    if stored_hash != digest:
        raise _refuse(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "this idempotency key was already used with different input",
            "idempotencyKey",
        )
    stored = await get_redemption(session, redemption_id)
    assert stored is not None
    return RedeemOutcome(stored, replayed=True)


async def cancel(
    session: AsyncSession,
    redemption_id: int,
    *,
    reason: str | None = None,
    by_member: bool = False,
    now: datetime | None = None,
) -> RedemptionRow:
    """Cancel a PENDING redemption: reverse its spend (the exact lots come back, with their
    original expiry; see ledger.service), return the stock, give an unseen coupon code back
    to the pool, withdraw its lottery tickets. ``by_member``: the member's own request (must be
    active; counts as activity). Ownership is the caller's check."""
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise invalid(f"reason is limited to {MAX_REASON_LENGTH} characters", "reason")
    moment = now or datetime.now(UTC)
    current = await get_redemption(session, redemption_id)
    if current is None:
        raise not_found("no such redemption", "redemptionId")
    _check_cancellable(current.status)
    conn = await driver(session)
    if by_member:
        status = await conn.fetchval("SELECT status FROM members WHERE id = $1", current.member_id)
        if status != "active":
            raise _refuse(ErrorCode.NOT_ELIGIBLE, "this member is suspended", "redemptionId")

    try:  # locks the member's account first, like redeem
        refund = await ledger.reverse(
            session,
            current.spend_transaction_id,
            memo=reason or "Redemption cancelled",
            reference=f"redemption:{redemption_id}",
        )
    except LedgerError as error:
        if error.code == ErrorCode.ALREADY_DONE:
            raise _refuse(
                ErrorCode.ALREADY_DONE, "this redemption is already cancelled", "redemptionId"
            ) from None
        raise DomainError(error.code, error.message, "redemptionId") from None
    if by_member:
        await touch(session, current.member_id, moment)
    returned = await conn.fetchval(
        "UPDATE catalog_items SET stock = stock + $2::int"
        " WHERE id = $1 AND drawn_at IS NULL RETURNING id",
        current.item_id,
        current.quantity,
    )
    if returned is None:
        raise _refuse(ErrorCode.NOT_ELIGIBLE, "this lottery has been drawn", "redemptionId")
    changed = await conn.fetchrow(
        "UPDATE redemptions SET status = 'CANCELLED', cancelled_at = $2, cancel_reason = $3,"
        " refund_transaction_id = $4 WHERE id = $1 AND status = 'PENDING'"
        " RETURNING code_revealed_at",
        redemption_id,
        moment,
        reason,
        refund.transaction_id,
    )
    if changed is None:  # fulfilled or cancelled meanwhile: undo everything
        latest = await get_redemption(session, redemption_id)
        _check_cancellable(latest.status if latest else "CANCELLED")
        raise _refuse(ErrorCode.CONFLICT, "the redemption changed meanwhile; try again")
    if changed["code_revealed_at"] is None:
        await conn.execute(
            "UPDATE coupon_codes SET redemption_id = NULL, assigned_at = NULL"
            " WHERE redemption_id = $1",
            redemption_id,
        )
    await conn.execute(
        "UPDATE lottery_entries SET status = 'CANCELLED'"
        " WHERE redemption_id = $1 AND status = 'ACTIVE'",
        redemption_id,
    )
    cancelled = await get_redemption(session, redemption_id)
    assert cancelled is not None
    _emit(session, "redemption.cancelled", cancelled, reason=reason)
    return cancelled


def _check_cancellable(status: str) -> None:
    if status == "CANCELLED":
        raise _refuse(
            ErrorCode.ALREADY_DONE, "this redemption is already cancelled", "redemptionId"
        )
    if status == "FULFILLED":
        raise _refuse(
            ErrorCode.NOT_ELIGIBLE, "a fulfilled redemption cannot be cancelled", "redemptionId"
        )


async def fulfill(
    session: AsyncSession, redemption_id: int, *, now: datetime | None = None
) -> RedemptionRow:
    """PENDING -> FULFILLED (the reward was handed over). A lottery redemption is fulfilled
    only after the draw, and only if it won (the draw itself closes the losing ones)."""
    moment = now or datetime.now(UTC)
    conn = await driver(session)
    current = await conn.fetchrow(
        "SELECT r.status, i.kind, i.drawn_at,"
        " EXISTS (SELECT 1 FROM lottery_entries e"
        "         WHERE e.redemption_id = r.id AND e.status = 'WON') AS won"
        " FROM redemptions r JOIN catalog_items i ON i.id = r.item_id WHERE r.id = $1",
        redemption_id,
    )
    if current is None:
        raise not_found("no such redemption", "redemptionId")
    _check_fulfillable(current["status"])
    if current["kind"] == "LOTTERY" and (current["drawn_at"] is None or not current["won"]):
        raise _refuse(
            ErrorCode.NOT_ELIGIBLE,
            "a lottery redemption is fulfilled only once it has won the draw",
            "redemptionId",
        )
    changed = await conn.fetchval(
        "UPDATE redemptions SET status = 'FULFILLED', fulfilled_at = $2"
        " WHERE id = $1 AND status = 'PENDING' RETURNING id",
        redemption_id,
        moment,
    )
    if changed is None:
        latest = await get_redemption(session, redemption_id)
        _check_fulfillable(latest.status if latest else "CANCELLED")
    fulfilled = await get_redemption(session, redemption_id)
    assert fulfilled is not None
    _emit(session, "redemption.fulfilled", fulfilled)
    return fulfilled


def _check_fulfillable(status: str) -> None:
    if status == "FULFILLED":
        raise _refuse(
            ErrorCode.ALREADY_DONE, "this redemption is already fulfilled", "redemptionId"
        )
    if status == "CANCELLED":
        raise _refuse(
            ErrorCode.NOT_ELIGIBLE, "a cancelled redemption cannot be fulfilled", "redemptionId"
        )


async def reveal_codes(
    session: AsyncSession, member_id: int, redemption_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """The coupon codes of the member's redemptions, recorded as shown to the member in the
    same statement (``code_revealed_at``). A code already given back to the pool (its
    redemption was cancelled before the code was ever shown) is not returned."""
    conn = await driver(session)
    records = await conn.fetch(
        """
        WITH shown AS (
            UPDATE redemptions r SET code_revealed_at = coalesce(r.code_revealed_at, $3)
            WHERE r.id = ANY($2::bigint[]) AND r.member_id = $1
              AND (r.status <> 'CANCELLED' OR r.code_revealed_at IS NOT NULL)
              AND EXISTS (SELECT 1 FROM coupon_codes c WHERE c.redemption_id = r.id)
            RETURNING r.id
        )
        SELECT shown.id, c.code FROM shown JOIN coupon_codes c ON c.redemption_id = shown.id
        """,
        member_id,
        list(redemption_ids),
        now,
    )
    return {record["id"]: record["code"] for record in records}


async def redemptions_of_entries(
    session: AsyncSession, entry_ids: Sequence[int]
) -> list[RedemptionRow]:
    """The redemptions holding these tickets, in the tickets' order (e.g. the draw's ranking)."""
    conn = await driver(session)
    records = await conn.fetch(
        f"SELECT e.id AS entry_id, {_REDEMPTION_COLUMNS}{_REDEMPTION_FROM}"
        " JOIN lottery_entries e ON e.redemption_id = r.id WHERE e.id = ANY($1::bigint[])",
        list(entry_ids),
    )
    by_entry = {record["entry_id"]: record for record in records}
    rows: list[RedemptionRow] = []
    for entry_id in entry_ids:
        record = by_entry.get(entry_id)
        if record is not None:
            values = dict(record)
            del values["entry_id"]
            rows.append(RedemptionRow(**values))
    return rows
