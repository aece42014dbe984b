"""The daily member jobs, set-based: each statement handles a whole batch of members.

All are idempotent: a second run (or two at once: rows are claimed with ``SKIP LOCKED``)
changes nothing that the first already did.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from members.lifecycle import STAGE_SQL, stage_params
from members.program import Program
from server import signals

BATCH_SIZE = 5_000

# One retention step for up to :batch members whose tier window has ended by :now. A member
# below the tier's retentionXp moves down exactly one rank (never below the lowest tier); every
# member handled starts a new window where the old one ended, so the next run skips them.
RETENTION_SQL = text(
    """
    WITH due AS (
        SELECT m.id AS member_id, m.tier_id, t.rank, t.retention_xp, m.tier_since,
               m.tier_since + make_interval(days => t.window_days) AS window_end
        FROM members m JOIN tiers t ON t.id = m.tier_id
        WHERE t.window_days IS NOT NULL
          AND m.tier_since + make_interval(days => t.window_days) <= :now
        ORDER BY m.id
        LIMIT :batch
        FOR UPDATE OF m SKIP LOCKED
    ),
    earned AS (
        SELECT d.member_id, coalesce(sum(p.amount), 0) AS xp
        FROM due d
        LEFT JOIN accounts a
               ON a.member_id = d.member_id AND a.currency = 'xp' AND a.kind = 'available'
        LEFT JOIN postings p
               ON p.account_id = a.id
              AND p.created_at >= d.tier_since AND p.created_at < d.window_end
        GROUP BY d.member_id
    ),
    decided AS (
        SELECT d.member_id, d.tier_id, d.window_end, e.xp,
               CASE WHEN d.retention_xp IS NOT NULL AND e.xp < d.retention_xp THEN
                    coalesce((SELECT t2.id FROM tiers t2 WHERE t2.rank < d.rank
                              ORDER BY t2.rank DESC LIMIT 1), d.tier_id)
                    ELSE d.tier_id END AS new_tier_id
        FROM due d JOIN earned e USING (member_id)
    ),
    moved AS (
        UPDATE members m SET tier_id = dc.new_tier_id, tier_since = dc.window_end
        FROM decided dc WHERE m.id = dc.member_id
        RETURNING m.id
    ),
    recorded AS (
        INSERT INTO tier_changes (member_id, from_tier_id, to_tier_id, reason, xp_in_window,
                                  created_at)
        SELECT member_id, tier_id, new_tier_id, 'retention', xp, window_end
        FROM decided WHERE new_tier_id <> tier_id
        RETURNING member_id, from_tier_id, to_tier_id, created_at
    )
    SELECT (SELECT count(*) FROM moved) AS handled, (SELECT count(*) FROM recorded) AS downgraded,
           (SELECT coalesce(json_agg(json_build_object(
                       'member_id', r.member_id, 'from_tier', f.key, 'to_tier', t.key,
                       'at', r.created_at)), '[]')
            FROM recorded r LEFT JOIN tiers f ON f.id = r.from_tier_id
            LEFT JOIN tiers t ON t.id = r.to_tier_id) AS changes
    """
)


async def evaluate_tiers_batch(session: AsyncSession, now: datetime) -> tuple[int, int]:
    """(members handled, members moved down) for one batch; 0 handled means done."""
    row = (await session.execute(RETENTION_SQL, {"now": now, "batch": BATCH_SIZE})).one()
    for change in _json(row.changes):
        signals.emit(
            session,
            "tier.changed",
            member_id=change["member_id"],
            from_tier=change["from_tier"],
            to_tier=change["to_tier"],
            reason="retention",
            at=datetime.fromisoformat(change["at"]),
        )
    return int(row.handled), int(row.downgraded)


async def scan_inactivity_batch(session: AsyncSession, now: datetime, program: Program) -> int:
    """Record the lifecycle stage changes of up to one batch of members; returns how many."""
    sql = text(
        f"""
        WITH changed AS (
            SELECT members.id, members.lifecycle_stage AS old_stage, {STAGE_SQL} AS new_stage
            FROM members
            WHERE members.lifecycle_stage IS DISTINCT FROM ({STAGE_SQL})
            ORDER BY members.id
            LIMIT :batch
            FOR UPDATE SKIP LOCKED
        ),
        updated AS (
            UPDATE members m SET lifecycle_stage = c.new_stage
            FROM changed c WHERE m.id = c.id
            RETURNING m.id
        ),
        recorded AS (
            INSERT INTO lifecycle_changes (member_id, from_stage, to_stage, created_at)
            SELECT id, old_stage, new_stage, CAST(:now AS timestamptz) FROM changed
            RETURNING member_id, from_stage, to_stage
        )
        SELECT count(*) AS changed,
               coalesce(json_agg(json_build_object('member_id', member_id,
                                                   'from_stage', from_stage,
                                                   'to_stage', to_stage)), '[]') AS changes
        FROM recorded
        """
    )
    params = {"now": now, "batch": BATCH_SIZE, **stage_params(now, program)}
    row = (await session.execute(sql, params)).one()
    for change in _json(row.changes):
        signals.emit(session, "member.stage_changed", **change, at=now)
    return int(row.changed or 0)


def _json(value: Any) -> list[dict[str, Any]]:
    """A JSON column as the driver returns it (text, or already decoded)."""
    return list(json.loads(value) if isinstance(value, str) else value or [])
