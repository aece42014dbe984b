"""A board's scores for one period, computed set-based from PostgreSQL.

The same definition as the live updates (see ``service`` for what counts): ``rebuild`` turns
these rows into Redis keys, ``close_period`` into the archive. One statement per board and
period: a scan of postings (or of the events of one type, by index), grouped by member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leaderboards.encoding import (
    MAX_SLOT,
    SCORE_CAP,
    TICK_MICROSECONDS,
    TIE_SLOTS,
    anchor_of,
)
from leaderboards.periods import Period
from leaderboards.service import EVENT_COUNT, BoardDef

# Credits of members' available accounts whose transaction debits the issuance account
# ($1 currency, $2 issuance account id, $3/$4 period bounds or NULL).
_LEDGER_SCORES = """
    SELECT a.member_id, sum(p.amount)::bigint AS score, max(p.created_at) AS reached_at
    FROM postings p
    JOIN accounts a ON a.id = p.account_id
    WHERE a.kind = 'available' AND a.currency = $1 AND a.member_id IS NOT NULL
      AND p.amount > 0
      AND ($3::timestamptz IS NULL OR p.created_at >= $3::timestamptz)
      AND ($4::timestamptz IS NULL OR p.created_at < $4::timestamptz)
      AND EXISTS (SELECT 1 FROM postings i
                  WHERE i.transaction_id = p.transaction_id AND i.account_id = $2
                    AND i.amount < 0)
    GROUP BY a.member_id
"""

# Events of one type ($1 type, $2 unused, $3/$4 period bounds or NULL).
_EVENT_SCORES = """
    SELECT e.member_id, count(*)::bigint AS score, max(e.occurred_at) AS reached_at
    FROM events e
    WHERE e.type = $1 AND $2::bigint IS NULL
      AND ($3::timestamptz IS NULL OR e.occurred_at >= $3::timestamptz)
      AND ($4::timestamptz IS NULL OR e.occurred_at < $4::timestamptz)
    GROUP BY e.member_id
"""

# The encoded value (encoding.py) in SQL, from numeric epoch seconds (exact in PostgreSQL
# 14+): $5 anchor, $6 tick in microseconds. Same integer arithmetic as ``slot_of``.
_SLOT = f"""least(greatest(floor((extract(epoch FROM s.reached_at) - extract(epoch FROM
    $5::timestamptz)) * 1000000 / $6::bigint), 0), {MAX_SLOT})"""
_ENCODED = f"""CASE WHEN s.score < {SCORE_CAP}
    THEN s.score::numeric * {TIE_SLOTS} + ({MAX_SLOT} - {_SLOT})
    ELSE s.score::numeric * {TIE_SLOTS} END"""

# Final standings: hidden (suspended) members left out, dense ranks in the order Redis uses
# (encoded value, then member string, both descending).
ARCHIVE_SQL = f"""
    INSERT INTO leaderboard_standings (leaderboard_id, period_id, rank, member_id, score,
                                       reached_at)
    SELECT $7, $8, row_number() OVER (ORDER BY v.encoded DESC,
                                      v.member_id::text COLLATE "C" DESC),
           v.member_id, v.score, v.reached_at
    FROM (SELECT s.member_id, s.score, s.reached_at, {_ENCODED} AS encoded
          FROM ({{scores}}) s
          JOIN members m ON m.id = s.member_id
          WHERE m.status <> 'suspended') v
"""


@dataclass(frozen=True)
class ScoreQuery:
    sql: str
    args: tuple[Any, ...]


async def score_query(conn: Any, board: BoardDef, period: Period) -> ScoreQuery | None:
    """The statement and arguments for ``board`` in ``period`` (asyncpg ``conn``), or None
    when nothing can count yet (no issuance account for the currency)."""
    bounds: tuple[datetime | None, datetime | None] = (period.start, period.end)
    if board.metric == EVENT_COUNT:
        return ScoreQuery(_EVENT_SCORES, (board.event_type, None, *bounds))
    currency = board.currency
    issuance = await conn.fetchval(
        "SELECT id FROM accounts WHERE key = $1", f"system:issuance:{currency}"
    )
    if issuance is None:
        return None
    return ScoreQuery(_LEDGER_SCORES, (currency, issuance, *bounds))


def archive_statement(query: ScoreQuery, board: BoardDef, period: Period) -> ScoreQuery:
    return ScoreQuery(
        ARCHIVE_SQL.format(scores=query.sql),
        (
            *query.args,
            anchor_of(period),
            TICK_MICROSECONDS[period.kind],
            board.id,
            period.id,
        ),
    )
