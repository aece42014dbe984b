"""Expiry settlement returns the transactions it wrote; points.expired webhooks are written
from them in one statement per batch instead of by a row trigger per expired lot.

The row trigger of 0008 ran a PL/pgSQL function (and a subscription check) for each of the
thousands of ``expire`` transactions a settlement batch inserts: about a third of the batch's
database time. ``ledger_settle_expirations`` now also returns ``o_transactions``; the ledger's
Python side emits one ``points.expired`` signal per batch, and the webhooks' durable writer
(``webhooks.outbox``) turns it into outbox rows in the same transaction, with one query, and only
when an endpoint subscribes.

The function body is 0002's with ``o_transactions`` added (a migration is a snapshot).

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

from server.migrate import earlier_revision

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
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
CREATE FUNCTION ledger_settle_expirations(p_as_of timestamptz, p_limit integer,
    OUT o_lots integer, OUT o_amount bigint, OUT o_candidates integer,
    OUT o_transactions bigint[])
LANGUAGE plpgsql SET jit = off AS $$
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
    PERFORM 1 FROM unnest(v_accounts) x(id) JOIN accounts a ON a.id = x.id
    ORDER BY a.id FOR NO KEY UPDATE OF a;

    -- after the locks: what is still due now (a spend or a twin settler may have been first)
    SELECT array_agg(l.id), array_agg(l.account_id), array_agg(l.remaining)
      INTO v_ids, v_accounts, v_amounts
      FROM unnest(v_ids) x(id) JOIN lots l ON l.id = x.id
     WHERE l.remaining > 0 AND l.expires_at <= v_as_of;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    WITH d AS MATERIALIZED (
        SELECT x.lot_id, x.account_id, x.amount, a.currency, a.member_id,
               e.id AS expired_acc, nextval(v_seq) AS tx_id
        FROM unnest(v_ids, v_accounts, v_amounts) x(lot_id, account_id, amount)
        JOIN accounts a ON a.id = x.account_id
        JOIN accounts e ON e.key = 'system:expired:' || a.currency
    ), u AS (
        -- every right-hand side reads the old row: expired grows by the old remaining
        UPDATE lots l SET expired = l.expired + l.remaining, remaining = 0
        FROM unnest(v_ids) x(id) WHERE l.id = x.id
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
    op.execute("DROP TRIGGER IF EXISTS webhooks_points_expired ON transactions")
    op.execute("DROP FUNCTION IF EXISTS webhooks_points_expired()")
    op.execute("DROP FUNCTION ledger_settle_expirations(timestamptz, integer)")
    op.execute(SETTLE.strip())


def downgrade() -> None:
    ledger = earlier_revision("0002_ledger.py")
    webhooks = earlier_revision("0008_webhooks.py")
    op.execute("DROP FUNCTION ledger_settle_expirations(timestamptz, integer)")
    op.execute(ledger.SETTLE.strip())
    op.execute(webhooks.POINTS_EXPIRED_FUNCTION.strip())
    op.execute(webhooks.CREATE_TRIGGER.strip())
