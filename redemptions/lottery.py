"""How a lottery is drawn, so that anyone can check it.

Method ``sha256-rank-v1``
-------------------------
1. At the draw, a fresh seed is made with ``secrets.token_hex(32)`` (64 hex characters) and
   stored with the draw (``lottery_draws.seed``); nobody knows it before the draw.
2. The entries are the lottery's tickets that are still ACTIVE (tickets of cancelled
   redemptions are out), ordered by entry id. Their count and ``entries_digest`` =
   SHA-256 of the ids in ascending order, joined by commas (``"1,2,5"``), are stored too.
3. Each entry gets the score ``SHA-256(seed + ":" + str(entry_id))`` (UTF-8; compared as
   bytes, i.e. as lowercase hex strings). Entries are ranked by (score, entry id).
4. Walking down the ranking, an entry wins unless its member has already won: one prize per
   member, however many tickets they hold. The first ``winners`` such entries win; with fewer
   members than ``winners``, every member wins once.

So anyone holding the seed and the list of (entry id, member) pairs re-derives the winners with
:func:`pick_winners`; the public can check the entry list against the digest and the winning
entry ids against the seed. The database computes the same ranking set-based (see
``DRAW_WINNERS_SQL``); a test checks the two agree.

Limit worth knowing: the seed is made at draw time, so nobody can predict the outcome, but the
operator of the database could in principle draw, roll back and draw again. A commit-reveal
scheme (publish SHA-256 of the seed before entries open) would close that; not done yet.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence

METHOD = "sha256-rank-v1"
MAX_WINNERS = 10_000


def new_seed() -> str:
    return secrets.token_hex(32)


def entry_score(seed: str, entry_id: int) -> bytes:
    return hashlib.sha256(f"{seed}:{entry_id}".encode()).digest()


def entries_digest(entry_ids: Iterable[int]) -> str:
    joined = ",".join(str(entry_id) for entry_id in sorted(entry_ids))
    return hashlib.sha256(joined.encode()).hexdigest()


def pick_winners(seed: str, entries: Sequence[tuple[int, int]], winners: int) -> list[int]:
    """The winning entry ids, best first, from ``(entry_id, member_id)`` pairs."""
    ranked = sorted(entries, key=lambda entry: (entry_score(seed, entry[0]), entry[0]))
    chosen: list[int] = []
    members_won: set[int] = set()
    for entry_id, member_id in ranked:
        if len(chosen) == winners:
            break
        if member_id in members_won:
            continue
        members_won.add(member_id)
        chosen.append(entry_id)
    return chosen


# The same ranking in SQL: each member's best entry, then the best ``winners`` of those.
# $1 item id, $2 seed, $3 winners. Scores are bytea, compared bytewise like the hex strings.
DRAW_WINNERS_SQL = """
WITH scored AS (
    SELECT id, member_id, sha256(convert_to($2 || ':' || id::text, 'UTF8')) AS score
    FROM lottery_entries WHERE item_id = $1 AND status = 'ACTIVE'
), best AS (
    SELECT DISTINCT ON (member_id) id, score FROM scored ORDER BY member_id, score, id
)
SELECT id FROM best ORDER BY score, id LIMIT $3
"""

ENTRIES_SUMMARY_SQL = """
SELECT count(*) AS entry_count,
       encode(sha256(convert_to(coalesce(string_agg(id::text, ',' ORDER BY id), ''), 'UTF8')),
              'hex') AS digest
FROM lottery_entries WHERE item_id = $1 AND status = 'ACTIVE'
"""
