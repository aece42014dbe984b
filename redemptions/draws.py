"""Drawing a LOTTERY item, and reading its tickets and its draw. The method, and how anyone
can check a draw, are ``redemptions.lottery``'s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from redemptions import lottery
from redemptions.catalog import whole_number
from server import signals
from server.errors import DomainError, ErrorCode, invalid, not_found
from server.rawsql import driver


@dataclass(frozen=True)
class DrawRecord:
    item_id: int
    seed: str
    method: str
    winners_requested: int
    entry_count: int
    entries_digest: str
    drawn_at: datetime
    winning_entry_ids: list[int]  # best first


@dataclass(frozen=True)
class LotteryEntryRow:
    id: int
    redemption_id: int
    member_id: int
    status: str


async def draw_lottery(
    session: AsyncSession, item_key: str, winners: int, *, now: datetime | None = None
) -> DrawRecord:
    """Draw a LOTTERY item once (method and audit trail: ``redemptions.lottery``). Winning
    tickets become WON and their redemptions stay PENDING until the prize is fulfilled; the
    other tickets become LOST and their redemptions FULFILLED (the ticket was used). Entries
    are closed from then on."""
    if not whole_number(winners) or not 1 <= winners <= lottery.MAX_WINNERS:
        raise invalid(f"winners must be between 1 and {lottery.MAX_WINNERS}", "winners")
    moment = now or datetime.now(UTC)
    conn = await driver(session)
    # The item row lock first. A redemption takes it too, inside its COMMIT (the stock
    # trigger), so once we have it every committed ticket is visible, and a redemption still
    # committing waits for us, then finds ``drawn_at`` set and fails: no ticket arrives late.
    item = await conn.fetchrow(
        "SELECT id, kind, drawn_at FROM catalog_items WHERE key = $1 FOR UPDATE", item_key
    )
    if item is None:
        raise not_found(f"no catalogue item {item_key!r}", "itemKey")
    if item["kind"] != "LOTTERY":
        raise invalid("only a LOTTERY item can be drawn", "itemKey")
    if item["drawn_at"] is not None:
        raise DomainError(ErrorCode.ALREADY_DONE, "this lottery has already been drawn", "itemKey")
    item_id: int = item["id"]
    seed = lottery.new_seed()
    summary = await conn.fetchrow(lottery.ENTRIES_SUMMARY_SQL, item_id)
    winning = [r["id"] for r in await conn.fetch(lottery.DRAW_WINNERS_SQL, item_id, seed, winners)]
    await conn.execute(
        "UPDATE lottery_entries SET status = CASE WHEN id = ANY($2::bigint[]) THEN 'WON'"
        " ELSE 'LOST' END WHERE item_id = $1 AND status = 'ACTIVE'",
        item_id,
        winning,
    )
    losers = await conn.fetch(
        "UPDATE redemptions r SET status = 'FULFILLED', fulfilled_at = $2"
        " WHERE r.item_id = $1 AND r.status = 'PENDING' AND NOT EXISTS"
        " (SELECT 1 FROM lottery_entries e WHERE e.redemption_id = r.id AND e.status = 'WON')"
        " RETURNING r.id, r.member_id, r.quantity, r.cost",
        item_id,
        moment,
    )
    for loser in losers:  # a losing ticket's redemption is fulfilled (the ticket was used)
        signals.emit(
            session,
            "redemption.fulfilled",
            redemption_id=loser["id"],
            member_id=loser["member_id"],
            item_id=item_id,
            item_key=item_key,
            quantity=loser["quantity"],
            cost=loser["cost"],
            at=moment,
        )
    await conn.execute("UPDATE catalog_items SET drawn_at = $2 WHERE id = $1", item_id, moment)
    await conn.execute(
        "INSERT INTO lottery_draws (item_id, seed, method, winners_requested, entry_count,"
        " entries_digest, drawn_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        item_id,
        seed,
        lottery.METHOD,
        winners,
        summary["entry_count"],
        summary["digest"],
        moment,
    )
    return DrawRecord(
        item_id=item_id,
        seed=seed,
        method=lottery.METHOD,
        winners_requested=winners,
        entry_count=summary["entry_count"],
        entries_digest=summary["digest"],
        drawn_at=moment,
        winning_entry_ids=winning,
    )


async def get_draw(session: AsyncSession, item_id: int) -> DrawRecord | None:
    conn = await driver(session)
    record = await conn.fetchrow("SELECT * FROM lottery_draws WHERE item_id = $1", item_id)
    if record is None:
        return None
    won = await conn.fetch(
        "SELECT id FROM lottery_entries WHERE item_id = $1 AND status = 'WON'", item_id
    )
    seed: str = record["seed"]
    # each winner is its member's best ticket, so the score alone gives the draw's order
    ranked = sorted((r["id"] for r in won), key=lambda i: (lottery.entry_score(seed, i), i))
    return DrawRecord(
        item_id=item_id,
        seed=seed,
        method=record["method"],
        winners_requested=record["winners_requested"],
        entry_count=record["entry_count"],
        entries_digest=record["entries_digest"],
        drawn_at=record["drawn_at"],
        winning_entry_ids=ranked,
    )


async def lottery_entries(
    session: AsyncSession, item_id: int, *, limit: int, after_id: int | None
) -> list[LotteryEntryRow]:
    """A lottery's tickets in id order (the order the draw's digest uses)."""
    conn = await driver(session)
    records = await conn.fetch(
        "SELECT id, redemption_id, member_id, status FROM lottery_entries"
        " WHERE item_id = $1 AND ($2::bigint IS NULL OR id > $2) ORDER BY id LIMIT $3",
        item_id,
        after_id,
        limit,
    )
    return [LotteryEntryRow(**dict(r)) for r in records]


async def entries_for_redemptions(
    session: AsyncSession, redemption_ids: Sequence[int]
) -> dict[int, list[LotteryEntryRow]]:
    conn = await driver(session)
    records = await conn.fetch(
        "SELECT id, redemption_id, member_id, status FROM lottery_entries"
        " WHERE redemption_id = ANY($1::bigint[]) ORDER BY id",
        list(redemption_ids),
    )
    found: dict[int, list[LotteryEntryRow]] = {}
    for record in records:
        found.setdefault(record["redemption_id"], []).append(LotteryEntryRow(**dict(record)))
    return found
