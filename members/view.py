"""A member's own view in one statement.

``me { balance pendingBalance tierProgress { … } }`` needs the member row, then the
member's balances and the xp earned in the tier-progress window: three queries, one after the
other on the request's connection. On this kind of machine a round trip costs the API process
about as much CPU as resolving a dozen fields, so :func:`member_view` reads all three in ONE
statement (the balances and the xp only when the query asks for them), and the resolvers find
them already loaded (``schema.members`` primes their DataLoaders).

The tier-progress window depends on the member's tier, unknown until the row is read: the
statement gets the start of the window for every tier the process knows (and for "no tier")
and picks the member's. A tier created since the process cached its tiers has no entry; then
no xp comes back and the resolver asks on its own, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta

from ledger.queries import AVAILABLE_SQL, PENDING_SQL
from ledger.types import Balances
from members.models import Tier
from members.service import MEMBER_ROW_SQL, MemberRow
from members.tiers import progress_window, xp_earned_sql
from server import rawsql

NO_TIER = 0  # stands for "no tier" in the window table (tier ids start at 1)
# A currency the member holds no account in reads as 0; these are primed as such, so that the
# usual queries never ask again (another currency without an account costs its own query).
USUAL_CURRENCIES = ("points", "xp")

MEMBER_VIEW_SQL = f"""
WITH m AS ({MEMBER_ROW_SQL} external_id = $1),
window_start AS (
    SELECT w.since FROM m, unnest($4::bigint[], $5::timestamptz[]) AS w(tier_id, since)
    WHERE w.tier_id = coalesce(m.tier_id, {NO_TIER})
)
SELECT m.*,
    CASE WHEN $2 THEN ARRAY(
        SELECT ROW(a.currency, {AVAILABLE_SQL}, {PENDING_SQL})
        FROM accounts a WHERE a.member_id = m.id GROUP BY a.currency
    ) END AS balances,
    CASE WHEN $3 AND EXISTS (SELECT 1 FROM window_start) THEN (
        {xp_earned_sql("m.id", "(SELECT since FROM window_start)")}
    ) END AS xp_earned
FROM m
"""


MEMBER_COLUMNS = len(fields(MemberRow))


@dataclass(frozen=True)
class MemberView:
    member: MemberRow
    # Every currency the member holds an account in (None: not asked); other currencies: 0.
    balances: dict[str, Balances] | None
    # The xp earned in the window of ``window_days`` (None: not asked, or a tier unknown here).
    xp_earned: int | None
    window_days: int | None


async def member_view(
    session: rawsql.Queryable,
    external_id: str,
    *,
    tiers: list[Tier],
    balances: bool,
    xp: bool,
    now: datetime,
) -> MemberView | None:
    """The member (None: no such member), with the balances and xp asked for."""
    windows = {tier.id: progress_window(tier.id, tiers)[2] for tier in tiers}
    windows[NO_TIER] = progress_window(None, tiers)[2]
    since = [now - timedelta(days=days) if days else None for days in windows.values()]
    row = await rawsql.fetchrow(
        session, MEMBER_VIEW_SQL, external_id, balances, xp, list(windows), since
    )
    if row is None:
        return None
    member = MemberRow(*list(row.values())[:MEMBER_COLUMNS])
    found = row["balances"]
    return MemberView(
        member=member,
        balances=None if found is None else {c: Balances(int(a), int(p)) for c, a, p in found},
        xp_earned=None if row["xp_earned"] is None else int(row["xp_earned"]),
        window_days=windows.get(member.tier_id or NO_TIER),
    )
