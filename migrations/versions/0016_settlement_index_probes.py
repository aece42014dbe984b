"""Expiry settlement finds a batch's lots and accounts by index, never by hashing whole tables.

0010's ``ledger_settle_expirations`` joined the batch's arrays (``unnest``) to ``lots`` and
``accounts``; the planner turned three of those joins into hash joins over the whole table:
every 5,000-lot batch read all of ``lots`` twice (re-reading the lots after the locks, and in
the ``UPDATE``) and all of ``accounts`` twice (the locks, the batch's accounts), about 40 % of
a batch's database time with 100,000 lots, and growing with the ledger. Each lookup is now an
index probe with ``= ANY(array)`` over the batch's own ids (as 0012 did for the batch entry
point), and the statements are planned for the arrays at hand (``force_custom_plan``). Same
signature, same results, same locking order.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

from alembic import op

from server.migrate import earlier_revision

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTLE = r"""
-- Expire the remainder of every lot whose expires_at <= p_as_of (clamped to now(): settlement
-- never runs ahead of the clock), at most p_limit lots, set-based. Each lot gets its own
-- 'expire' transaction keyed expire:lot:<id>. The member accounts are locked in id order
-- first, like a spend does, and the lots are re-read after the locks, so neither a concurrent
-- spend nor a second settler can expire a lot twice or expire points that were just spent.
-- Once a lot is past expires_at its remaining never grows again (a reversal sends such points
-- straight to the expired account), so its key cannot exist yet: a plain INSERT, and a
-- duplicate key would be a bug that fails loudly instead of being skipped.
CREATE OR REPLACE FUNCTION ledger_settle_expirations(p_as_of timestamptz, p_limit integer,
    OUT o_lots integer, OUT o_amount bigint, OUT o_candidates integer,
    OUT o_transactions bigint[])
LANGUAGE plpgsql SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_as_of timestamptz := LEAST(p_as_of, now());
    v_seq regclass := pg_get_serial_sequence('transactions', 'id')::regclass;
    v_ids bigint[];
    v_accounts bigint[];
    v_amounts bigint[];
BEGIN
    SELECT array_agg(d.id), array_agg(DISTINCT d.account_id) INTO v_ids, v_accounts FROM (
        SELECT l.id, l.account_id FROM lots l
        WHERE l.remaining > 0 AND l.expires_at <= v_as_of
        ORDER BY l.expires_at LIMIT p_limit) d;
    o_candidates := COALESCE(cardinality(v_ids), 0);
    o_lots := 0;
    o_amount := 0;
    IF o_candidates = 0 THEN
        RETURN;
    END IF;
    PERFORM ledger_system_account(c.key, 'expired') FROM currencies c;
    PERFORM 1 FROM accounts a WHERE a.id = ANY(v_accounts)
    ORDER BY a.id FOR NO KEY UPDATE OF a;

    -- after the locks: what is still due now (a spend or a twin settler may have been first)
    SELECT array_agg(l.id), array_agg(l.account_id), array_agg(l.remaining)
      INTO v_ids, v_accounts, v_amounts
      FROM lots l
     WHERE l.id = ANY(v_ids) AND l.remaining > 0 AND l.expires_at <= v_as_of;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    WITH acc AS (
        SELECT a.id, a.currency, a.member_id, e.id AS expired_acc
        FROM accounts a
        JOIN accounts e ON e.key = 'system:expired:' || a.currency
        WHERE a.id = ANY(v_accounts)
    ), d AS MATERIALIZED (
        SELECT x.lot_id, x.account_id, x.amount, acc.currency, acc.member_id,
               acc.expired_acc, nextval(v_seq) AS tx_id
        FROM unnest(v_ids, v_accounts, v_amounts) x(lot_id, account_id, amount)
        JOIN acc ON acc.id = x.account_id
    ), u AS (
        -- every right-hand side reads the old row: expired grows by the old remaining
        UPDATE lots l SET expired = l.expired + l.remaining, remaining = 0
        WHERE l.id = ANY(v_ids)
    ), t AS (
        INSERT INTO transactions (id, kind, reference, member_id, idempotency_key)
        SELECT d.tx_id, 'expire', 'lot:' || d.lot_id, d.member_id, 'expire:lot:' || d.lot_id
        FROM d
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT d.tx_id, x.account_id, d.currency, x.amount
        FROM d CROSS JOIN LATERAL
             (VALUES (d.account_id, -d.amount), (d.expired_acc, d.amount)) x(account_id, amount)
    ), b AS (
        UPDATE accounts a SET balance = a.balance - s.total
        FROM (SELECT d.account_id, sum(d.amount) AS total FROM d GROUP BY d.account_id) s
        WHERE a.id = s.account_id
    )
    SELECT count(*), COALESCE(sum(d.amount), 0), array_agg(d.tx_id)
      INTO o_lots, o_amount, o_transactions FROM d;
END $$;
"""


def upgrade() -> None:
    op.execute(SETTLE.strip())


def downgrade() -> None:
    before = earlier_revision("0010_settlement_returns_transactions.py")
    op.execute(before.SETTLE.strip().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
