"""Check every ledger invariant, set-based, in one consistent snapshot.

Invariants:
- every transaction has two or more postings, and they sum to zero per currency;
- every posting, lot and lot allocation points at rows that exist (these hot tables carry no
  foreign keys, see ``ledger.models.Posting``), and a posting's currency is its account's;
- a bounded account's stored balance equals the sum of its postings, and is not negative;
  unbounded system accounts keep no stored balance (it stays 0);
- per member available account, the lots' remaining amounts sum to its balance, and no lot
  sits on another kind of account;
- per lot, ``amount = remaining + expired + sum(allocations)``;
- per currency, the expired account holds exactly the lots' expired parts;
- per member pending account, the balance equals its pending credits still pending.

Per-account checks run in chunks of account ids (a tqdm bar with ``progress=True``); the rest
are single aggregate statements (hash joins: nested loops are switched off for the check's
transaction). Everything runs in one REPEATABLE READ, READ ONLY transaction, so a busy ledger
never produces false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool
from tqdm import tqdm

from server.db import to_async_url

SAMPLES = 10
CHUNK = 50_000


@dataclass(frozen=True)
class Violation:
    check: str
    description: str
    count: int
    samples: list[dict[str, Any]]


@dataclass
class Report:
    violations: list[Violation] = field(default_factory=list)
    checks: int = 0
    accounts: int = 0
    transactions: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        head = (
            f"ledger verify: {self.checks} checks over {self.accounts} accounts and "
            f"{self.transactions} transactions: "
        )
        if self.ok:
            return head + "OK"
        lines = [head + f"{len(self.violations)} FAILED"]
        for v in self.violations:
            lines.append(f"  [{v.check}] {v.description}: {v.count} violation(s)")
            lines.extend(f"      {sample}" for sample in v.samples)
        return "\n".join(lines)


# name -> (description, SQL). Whole-ledger checks.
GLOBAL_CHECKS: dict[str, tuple[str, str]] = {
    "unbalanced": (
        "postings of a transaction do not sum to zero per currency",
        """SELECT transaction_id, currency, sum(amount) AS total FROM postings
           GROUP BY transaction_id, currency HAVING sum(amount) <> 0""",
    ),
    "too_few_postings": (
        "transaction with fewer than two postings",
        """SELECT t.id AS transaction_id, t.kind, count(p.id) AS postings
           FROM transactions t LEFT JOIN postings p ON p.transaction_id = t.id
           GROUP BY t.id, t.kind HAVING count(p.id) < 2""",
    ),
    "orphan_postings": (
        "posting whose transaction or account does not exist, or of another currency",
        """SELECT p.id AS posting_id, p.transaction_id, p.account_id, p.currency,
                  a.currency AS account_currency
           FROM postings p
           LEFT JOIN transactions t ON t.id = p.transaction_id
           LEFT JOIN accounts a ON a.id = p.account_id
           WHERE t.id IS NULL OR a.id IS NULL OR a.currency <> p.currency""",
    ),
    "orphan_lots": (
        "lot whose transaction does not exist or whose account is not an available account",
        """SELECT l.id AS lot_id, l.account_id, a.kind
           FROM lots l
           LEFT JOIN transactions t ON t.id = l.transaction_id
           LEFT JOIN accounts a ON a.id = l.account_id
           WHERE t.id IS NULL OR a.id IS NULL OR a.kind <> 'available'""",
    ),
    "orphan_allocations": (
        "lot allocation whose transaction or lot does not exist",
        """SELECT la.transaction_id, la.lot_id FROM lot_allocations la
           LEFT JOIN transactions t ON t.id = la.transaction_id
           LEFT JOIN lots l ON l.id = la.lot_id
           WHERE t.id IS NULL OR l.id IS NULL""",
    ),
    "lot_arithmetic": (
        "lot amount differs from remaining + expired + allocations",
        """SELECT l.id AS lot_id, l.amount, l.remaining, l.expired,
                  COALESCE(s.allocated, 0) AS allocated
           FROM lots l
           LEFT JOIN (SELECT lot_id, sum(amount) AS allocated FROM lot_allocations
                      GROUP BY lot_id) s ON s.lot_id = l.id
           WHERE l.amount <> l.remaining + l.expired + COALESCE(s.allocated, 0)""",
    ),
    "expired_account": (
        "expired account balance differs from the lots' expired parts",
        """WITH held AS (
               SELECT a.currency, sum(l.expired) AS lots_expired FROM lots l
               JOIN accounts a ON a.id = l.account_id GROUP BY a.currency),
           posted AS (
               SELECT a.currency, sum(p.amount) AS account_balance FROM postings p
               JOIN accounts a ON a.id = p.account_id AND a.kind = 'expired'
               WHERE a.member_id IS NULL GROUP BY a.currency)
           SELECT COALESCE(h.currency, p.currency) AS currency,
                  COALESCE(h.lots_expired, 0) AS lots_expired,
                  COALESCE(p.account_balance, 0) AS account_balance
           FROM held h FULL JOIN posted p ON p.currency = h.currency
           WHERE COALESCE(h.lots_expired, 0) <> COALESCE(p.account_balance, 0)""",
    ),
    "unbounded_stored_balance": (
        "unbounded system account with a stored balance (it must be derived, kept at 0)",
        "SELECT id AS account_id, key, balance FROM accounts WHERE allow_negative AND balance <> 0",
    ),
}

# name -> (description, SQL with :lo and :hi account id bounds). Per-account checks.
ACCOUNT_CHECKS: dict[str, tuple[str, str]] = {
    "stored_balance": (
        "stored balance differs from the sum of postings",
        """SELECT a.id AS account_id, a.key, a.balance, COALESCE(s.total, 0) AS postings
           FROM accounts a
           LEFT JOIN (SELECT account_id, sum(amount) AS total FROM postings
                      WHERE account_id BETWEEN :lo AND :hi GROUP BY account_id) s
                  ON s.account_id = a.id
           WHERE a.id BETWEEN :lo AND :hi AND NOT a.allow_negative
             AND a.balance <> COALESCE(s.total, 0)""",
    ),
    "negative_balance": (
        "bounded account with a negative balance",
        """SELECT id AS account_id, key, balance FROM accounts
           WHERE id BETWEEN :lo AND :hi AND NOT allow_negative AND balance < 0""",
    ),
    "lots_vs_balance": (
        "available balance differs from the lots' remaining amounts",
        """SELECT a.id AS account_id, a.key, a.balance, COALESCE(s.remaining, 0) AS lots
           FROM accounts a
           LEFT JOIN (SELECT account_id, sum(remaining) AS remaining FROM lots
                      WHERE account_id BETWEEN :lo AND :hi GROUP BY account_id) s
                  ON s.account_id = a.id
           WHERE a.id BETWEEN :lo AND :hi AND a.kind = 'available'
             AND a.balance <> COALESCE(s.remaining, 0)""",
    ),
    "pending_vs_credits": (
        "pending balance differs from the credits still pending",
        """SELECT a.id AS account_id, a.key, a.balance, COALESCE(s.pending, 0) AS credits
           FROM accounts a
           LEFT JOIN (SELECT member_id, currency, sum(amount) AS pending FROM pending_credits
                      WHERE status = 'pending' GROUP BY member_id, currency) s
                  ON s.member_id = a.member_id AND s.currency = a.currency
           WHERE a.id BETWEEN :lo AND :hi AND a.kind = 'pending'
             AND a.balance <> COALESCE(s.pending, 0)""",
    ),
}

# a pending credit whose member has no pending account at all (missed by the check above)
ORPHAN_PENDING = (
    "pending credit without a pending account",
    """SELECT pc.transaction_id, pc.member_id, pc.currency FROM pending_credits pc
       LEFT JOIN accounts a ON a.member_id = pc.member_id AND a.currency = pc.currency
                           AND a.kind = 'pending'
       WHERE pc.status = 'pending' AND a.id IS NULL""",
)


async def _run(
    session: AsyncSession, name: str, description: str, sql: str, params: dict[str, int]
) -> Violation | None:
    wrapped = f"SELECT count(*) OVER () AS _total, x.* FROM ({sql}) x LIMIT {SAMPLES}"
    rows = (await session.execute(text(wrapped), params)).mappings().all()
    if not rows:
        return None
    samples = [{k: v for k, v in row.items() if k != "_total"} for row in rows]
    return Violation(name, description, int(rows[0]["_total"]), samples)


def _merge(found: dict[str, Violation], violation: Violation) -> None:
    before = found.get(violation.check)
    if before is None:
        found[violation.check] = violation
        return
    samples = (before.samples + violation.samples)[:SAMPLES]
    found[violation.check] = Violation(
        violation.check, violation.description, before.count + violation.count, samples
    )


async def verify_session(
    session: AsyncSession, *, progress: bool = False, chunk: int = CHUNK
) -> Report:
    """Run every check on ``session`` (call it at the start of a fresh transaction; it sets
    that transaction to REPEATABLE READ, READ ONLY)."""
    await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
    # Every check is an aggregate join. Right after a bulk load the statistics lag, and a
    # nested loop that re-aggregates lots per account turns seconds into minutes: hash joins.
    await session.execute(text("SET LOCAL enable_nestloop = off"))
    report = Report()
    bounds = (
        await session.execute(
            text("SELECT min(id), max(id), count(*) FROM accounts"),
        )
    ).one()
    report.accounts = int(bounds[2])
    report.transactions = int(
        (await session.execute(text("SELECT count(*) FROM transactions"))).scalar_one()
    )
    found: dict[str, Violation] = {}
    checks = [*GLOBAL_CHECKS.items(), ("orphan_pending", ORPHAN_PENDING)]
    for name, (description, sql) in checks:
        violation = await _run(session, name, description, sql, {})
        if violation:
            _merge(found, violation)
    low, high = bounds[0], bounds[1]
    if low is not None:
        with tqdm(
            total=report.accounts, unit="acct", disable=not progress, desc="ledger verify"
        ) as bar:
            start = int(low)
            while start <= int(high):
                stop = start + chunk - 1
                for name, (description, sql) in ACCOUNT_CHECKS.items():
                    params = {"lo": start, "hi": stop}
                    violation = await _run(session, name, description, sql, params)
                    if violation:
                        _merge(found, violation)
                counted = await session.execute(
                    text("SELECT count(*) FROM accounts WHERE id BETWEEN :lo AND :hi"),
                    {"lo": start, "hi": stop},
                )
                bar.update(int(counted.scalar_one()))
                start = stop + 1
    report.checks = len(checks) + len(ACCOUNT_CHECKS)
    report.violations = list(found.values())
    return report


async def verify_database_url(url: str, *, progress: bool = False) -> Report:
    """Verify the ledger of the database at ``url`` (a plain or asyncpg PostgreSQL URL)."""
    engine = create_async_engine(to_async_url(url), poolclass=NullPool)
    try:
        async with AsyncSession(engine) as session, session.begin():
            return await verify_session(session, progress=progress)
    finally:
        await engine.dispose()
