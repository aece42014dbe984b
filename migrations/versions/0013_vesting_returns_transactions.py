"""Vesting of due pending credits returns the transactions it wrote, so that the members
whose points became available are told live (``memberUpdates``), as expiry settlement does
since 0010.

``ledger_vest_due`` gains ``o_transactions`` (the ``vest`` transactions of the batch); the body
is 0002's otherwise (a migration is a snapshot).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

from server.migrate import earlier_revision

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VEST_DUE = r"""
-- Vest every pending credit due by p_as_of, at most p_limit of them, set-based.
CREATE FUNCTION ledger_vest_due(p_as_of timestamptz, p_limit integer,
    OUT o_count integer, OUT o_amount bigint, OUT o_candidates integer,
    OUT o_transactions bigint[])
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('transactions', 'id')::regclass;
    v_ids bigint[];
BEGIN
    SELECT array_agg(d.transaction_id) INTO v_ids FROM (
        SELECT pc.transaction_id FROM pending_credits pc
        WHERE pc.status = 'pending' AND pc.available_at <= LEAST(p_as_of, now())
        ORDER BY pc.available_at LIMIT p_limit) d;
    o_candidates := COALESCE(cardinality(v_ids), 0);
    o_count := 0;
    o_amount := 0;
    IF o_candidates = 0 THEN
        RETURN;
    END IF;
    -- available accounts on demand, then every account involved locked in id order
    PERFORM ledger_member_account(m.member_id, m.currency, false)
    FROM (SELECT DISTINCT pc.member_id, pc.currency FROM pending_credits pc
          WHERE pc.transaction_id = ANY(v_ids)) m;
    PERFORM 1 FROM accounts a
    WHERE a.key IN (
        SELECT 'member:' || pc.member_id || ':' || pc.currency || s.suffix
        FROM pending_credits pc, (VALUES (''), (':pending')) s(suffix)
        WHERE pc.transaction_id = ANY(v_ids))
    ORDER BY a.id FOR NO KEY UPDATE;

    WITH v AS (
        UPDATE pending_credits pc
        SET status = 'vested', settled_at = now(),
            settled_transaction_id = nextval(v_seq)
        WHERE pc.transaction_id = ANY(v_ids) AND pc.status = 'pending'
        RETURNING pc.*
    ), d AS (
        SELECT v.*, pa.id AS pending_acc, aa.id AS available_acc, c.expiring
        FROM v
        JOIN accounts pa ON pa.key = 'member:' || v.member_id || ':' || v.currency || ':pending'
        JOIN accounts aa ON aa.key = 'member:' || v.member_id || ':' || v.currency
        JOIN currencies c ON c.key = v.currency
    ), t AS (
        INSERT INTO transactions (id, kind, metadata, reference, member_id, idempotency_key)
        SELECT d.settled_transaction_id, 'vest',
               jsonb_build_object('pending_transaction_id', d.transaction_id),
               'pending:' || d.transaction_id, d.member_id, 'vest:' || d.transaction_id
        FROM d
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT d.settled_transaction_id, x.account_id, d.currency, x.amount
        FROM d CROSS JOIN LATERAL
             (VALUES (d.pending_acc, -d.amount), (d.available_acc, d.amount)) x(account_id, amount)
    ), l AS (
        INSERT INTO lots (account_id, transaction_id, amount, remaining, expires_at)
        SELECT d.available_acc, d.settled_transaction_id, d.amount, d.amount,
               CASE WHEN d.expiring THEN COALESCE(
                   d.lot_expires_at,
                   d.available_at + make_interval(days => d.lot_lifetime_days)) END
        FROM d
    ), b AS (
        UPDATE accounts a SET balance = a.balance + s.delta
        FROM (SELECT x.account_id, sum(x.amount) AS delta
              FROM d CROSS JOIN LATERAL
                   (VALUES (d.pending_acc, -d.amount), (d.available_acc, d.amount))
                   x(account_id, amount)
              GROUP BY x.account_id) s
        WHERE a.id = s.account_id
    )
    SELECT count(*), COALESCE(sum(d.amount), 0), array_agg(d.settled_transaction_id)
      INTO o_count, o_amount, o_transactions FROM d;
END $$;
"""


def upgrade() -> None:
    op.execute("DROP FUNCTION ledger_vest_due(timestamptz, integer)")
    op.get_bind().exec_driver_sql(VEST_DUE.strip())  # raw: ':pending' is not a bind parameter


def downgrade() -> None:
    ledger = earlier_revision("0002_ledger.py")
    (original,) = [sql for sql in ledger._statements() if "FUNCTION ledger_vest_due" in sql]
    op.execute("DROP FUNCTION ledger_vest_due(timestamptz, integer)")
    op.get_bind().exec_driver_sql(original)
