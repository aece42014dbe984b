"""``recordEvent`` in one read and ONE writing statement (``record_event_at_once``), on an
autocommit connection: no BEGIN, no COMMIT, no SQLAlchemy session.

The statement advances the quests (``quests.progress.advance_ctes``), and for every quest the
event completes it freezes the rewards, claims an auto-claim quest's row and grants its points
and xp through ``ledger_grant`` (keys, references, memos and input hashes exactly as
``quests.rewards.grant_rewards`` would post them), then stores the event with its answer and
moves the member's ``lastActiveAt``. Points rewards take the multiplier (tier × campaigns)
computed from this process's caches before the statement.

What it does not do, it leaves to ``quests.events.record_event`` in a transaction: a replay or
a referred member (seen by the read), or (seen by the statement, which then raises SQLSTATE
``QL420`` and so writes nothing) a badge or title to give, points without a cached multiplier,
a credit a webhook must see in the same transaction, a grant the ledger refuses, or an xp
credit that upgrades the member's tier.
"""

from __future__ import annotations

import json
from datetime import datetime

from ledger.service import credited
from ledger.types import Posted
from members.program import cached_program
from members.service import require_active
from members.tiers import cached_tiers, xp_earned_sql
from quests.definitions import cached_quest_index
from quests.events import (
    EventMember,
    EventOutcome,
    StoredEvent,
    advances_for,
    announce,
    awards_from_json,
    event_input_hash,
    matching_quests,
    tier_gated,
    validate_event,
)
from quests.progress import Advance, advance_arguments, advance_ctes, progress_updates
from quests.rewards import cached_points_multiplier, quest_memo
from server import rawsql
from server.errors import not_found, violates_unique
from server.rawsql import Autocommit

MEMBER_FOR_EVENT_SQL = """
SELECT m.id, m.external_id, m.status, m.timezone, m.tier_id, m.referred_by_id,
       EXISTS (SELECT 1 FROM events e WHERE e.member_id = m.id AND e.idempotency_key = $2)
           AS key_used
FROM members m WHERE m.external_id = $1
"""

# $1 member, $2 unused here (NULL: the event's id comes from ``new_event``), $3 now, $4-$12
# the advances (``advance_arguments``), $13 type, $14 properties, $15 occurred at, $16 key,
# $17 input hash, $18 each advance's reward memo, $19 the points multiplier (NULL: not known),
# $20 the program's points lifetime in days, $21 whether credits may be granted here (no
# webhook wants them written in the same transaction).
_XP_IN_WINDOW = xp_earned_sql(
    "$1",
    "CASE WHEN t.window_days IS NOT NULL"
    " THEN $3::timestamptz - make_interval(days => t.window_days) END",
)
RECORD_AT_ONCE_SQL = f"""
WITH new_event AS (
    SELECT coalesce($2::bigint, nextval(pg_get_serial_sequence('events', 'id'))) AS id
), {advance_ctes("(SELECT id FROM new_event)")}, quest AS (
    SELECT * FROM unnest($4::bigint[], $11::text[], $18::text[])
        WITH ORDINALITY AS q(quest_id, rewards, memo, ord)
), progressed AS (
    SELECT a.id, a.status, q.ord, q.rewards, q.memo
    FROM advanced a JOIN quest q ON q.quest_id = a.quest_id
), reward AS (      -- what the auto-claim quests completed now give
    SELECT c.id AS progress_id, c.ord, r.idx, c.memo, r.item->>'kind' AS kind,
           r.item->>'currency' AS currency,
           CASE WHEN r.item->>'kind' = 'POINTS'
                THEN floor((r.item->>'amount')::numeric * $19::numeric)::bigint
                ELSE (r.item->>'amount')::bigint END AS amount
    FROM progressed c CROSS JOIN LATERAL jsonb_array_elements(c.rewards::jsonb)
        WITH ORDINALITY AS r(item, idx)
    WHERE c.status = 'CLAIMED'
), granted AS (
    SELECT r.*, g.o_status, g.o_tx, g.o_created_at
    FROM reward r, LATERAL (
        SELECT 'quest:' || r.progress_id AS reference,
               CASE WHEN r.kind = 'POINTS' THEN $20::integer END AS lifetime_days) AS p,
    LATERAL ledger_grant(
        $1, r.currency, r.amount, 'reward', r.memo, p.reference, NULL,
        p.reference || ':' || (r.idx - 1),
        quests_reward_grant_hash($1, r.amount, r.currency, r.memo, p.reference,
                                 p.lifetime_days),
        NULL, p.lifetime_days) AS g
    WHERE r.kind IN ('POINTS', 'XP') AND r.amount > 0 AND $21::boolean
), xp AS (
    SELECT coalesce(sum(amount), 0) AS granted FROM granted WHERE kind = 'XP'
), needs_transaction AS (
    SELECT quests_completion_needs_transaction()
    WHERE EXISTS (SELECT 1 FROM reward WHERE kind NOT IN ('POINTS', 'XP') OR amount IS NULL)
       OR (NOT $21::boolean AND EXISTS (SELECT 1 FROM reward))
       OR EXISTS (SELECT 1 FROM granted WHERE o_status <> 'ok')
       OR EXISTS (
           SELECT 1 FROM xp, tiers t
           WHERE xp.granted > 0 AND t.xp_threshold <= xp.granted + ({_XP_IN_WINDOW})
             AND NOT EXISTS (SELECT 1 FROM members m JOIN tiers cur ON cur.id = m.tier_id
                             WHERE m.id = $1 AND cur.rank >= t.rank))
), stored AS (
    INSERT INTO events (id, member_id, type, properties, occurred_at, idempotency_key,
                        input_hash, result)
    SELECT (SELECT id FROM new_event), $1, $13, $14::jsonb, $15, $16, $17,
           jsonb_build_object(
               'progressed', coalesce((SELECT jsonb_agg(id ORDER BY ord) FROM progressed),
                                      '[]'::jsonb),
               'completed', coalesce((SELECT jsonb_agg(id ORDER BY ord) FROM progressed
                                      WHERE status <> 'IN_PROGRESS'), '[]'::jsonb),
               'awarded', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                        'kind', kind, 'amount', amount,
                                        'currency', currency, 'key', NULL)
                                        ORDER BY ord, idx) FROM granted), '[]'::jsonb))
    WHERE NOT EXISTS (SELECT 1 FROM needs_transaction)
    RETURNING id, result::text
), touched AS (
    UPDATE members SET last_active_at = $15
    WHERE id = $1 AND (last_active_at IS NULL OR last_active_at < $15)
), credits AS (
    SELECT array_agg(currency ORDER BY ord, idx) AS currencies,
           array_agg(amount ORDER BY ord, idx) AS amounts,
           array_agg(o_tx ORDER BY ord, idx) AS transactions,
           min(o_created_at) AS credited_at
    FROM granted
)
SELECT s.id AS event_id, s.result, c.currencies, c.amounts, c.transactions, c.credited_at,
       a.*
FROM stored s CROSS JOIN credits c LEFT JOIN advanced a ON true
"""
NEEDS_TRANSACTION_SQLSTATE = "QL420"
EVENT_KEY_INDEX = "uq_events_member_id_key"


async def record_event_at_once(
    unit: Autocommit,
    *,
    external_id: str,
    event_type: str,
    properties: object,
    occurred_at: datetime | None,
    idempotency_key: str,
    now: datetime,
    may_credit: bool = True,
) -> EventOutcome | None:
    """``record_event`` for the common event: same checks, same rows, same answer, while this
    process has the program, the quests and what the event needs of the tiers and campaigns
    cached. ``may_credit`` False: a webhook wants credits written in their transaction, so
    an event that grants rewards goes there. None when the event needs ``record_event`` in a
    transaction instead; then nothing was written."""
    props, moment = validate_event(event_type, properties, occurred_at, idempotency_key, now)
    program, index = cached_program(), cached_quest_index()
    if program is None or index is None:
        return None
    row = await rawsql.fetchrow(unit, MEMBER_FOR_EVENT_SQL, external_id, idempotency_key)
    if row is None:
        raise not_found(f"no member with externalId {external_id!r}", "externalId")
    if row["key_used"] or row["referred_by_id"] is not None:
        return None  # a replay, or referral rewards to look at: record_event does both
    member = EventMember.from_row(row)
    require_active(member)
    candidates = matching_quests(index.get(event_type, []), moment, props)
    tiers = cached_tiers() if tier_gated(candidates) else []
    if tiers is None:
        return None
    advances = advances_for(candidates, member, moment, props, program, tiers)
    multiplier = (
        cached_points_multiplier(member.tier_id, event_type, now)
        if _grants_points(advances)
        else None
    )
    try:
        rows = await rawsql.fetch(
            unit,
            RECORD_AT_ONCE_SQL,
            member.id,
            None,
            now,
            *advance_arguments(advances),
            event_type,
            json.dumps(props),
            moment,
            idempotency_key,
            event_input_hash(event_type, props, occurred_at),
            [quest_memo(a.quest.name) for a in advances],
            multiplier,
            program.points_lifetime_days,
            may_credit,
        )
    except Exception as error:
        if getattr(error, "sqlstate", None) == NEEDS_TRANSACTION_SQLSTATE or violates_unique(
            error, EVENT_KEY_INDEX
        ):
            return None
        raise
    first = rows[0]
    result = json.loads(first["result"])
    updates = progress_updates([r for r in rows if r["id"] is not None], advances)
    outcome = EventOutcome(
        event=StoredEvent(first["event_id"], event_type, moment),
        awarded=awards_from_json(result["awarded"]),
    )
    for progress in updates:
        outcome.progressed.append(progress.progress_id)
        if progress.completed_now:
            outcome.completed.append(progress.progress_id)
        outcome.updates[progress.progress_id] = progress
    columns = (first["currencies"], first["amounts"], first["transactions"])
    for currency, amount, transaction in zip(*(c or [] for c in columns), strict=True):
        posted = Posted(transaction, first["credited_at"])
        credited(unit, member.id, currency, amount, "reward", posted)
    announce(unit, member.id, outcome)
    return outcome


def _grants_points(advances: list[Advance]) -> bool:
    """Whether a quest the event advances would grant points at once if it completed."""
    return any(
        a.quest.auto_claim and any(r["kind"] == "POINTS" for r in a.quest.rewards) for a in advances
    )
