"""Ledger: currencies, accounts, transactions, postings, lots, pending credits, and the
PL/pgSQL functions that move value (one round trip per operation; see ledger/service.py).

Revision ID: 0002
Revises: 0001
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at() -> sa.Column:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _tables() -> None:
    op.create_table(
        "currencies",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spendable", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("expiring", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("key", name="pk_currencies"),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("member_id", sa.BigInteger()),
        sa.Column("currency", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.UniqueConstraint("key", name="uq_accounts_key"),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_accounts_member_id_members"
        ),
        sa.ForeignKeyConstraint(
            ["currency"], ["currencies.key"], name="fk_accounts_currency_currencies"
        ),
        sa.CheckConstraint(
            "allow_negative OR balance >= 0", name=op.f("ck_accounts_balance_non_negative")
        ),
        postgresql_with={"fillfactor": 80},
    )
    op.create_index("ix_accounts_member_id", "accounts", ["member_id"])
    op.create_table(
        "transactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("memo", sa.Text()),
        sa.Column(
            "metadata",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("reference", sa.Text()),
        sa.Column("member_id", sa.BigInteger()),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("input_hash", sa.String(64)),
        sa.Column("reverses_id", sa.BigInteger()),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_transactions"),
        sa.UniqueConstraint("idempotency_key", name="uq_transactions_idempotency_key"),
        sa.ForeignKeyConstraint(
            ["reverses_id"], ["transactions.id"], name="fk_transactions_reverses_id_transactions"
        ),
    )
    op.create_index(
        "uq_transactions_reverses_id",
        "transactions",
        ["reverses_id"],
        unique=True,
        postgresql_where=sa.text("reverses_id IS NOT NULL"),
    )
    op.create_table(
        "postings",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("transaction_id", "id", name="pk_postings"),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_postings_amount_non_zero")),
    )
    op.create_index("ix_postings_account_id_id", "postings", ["account_id", "id"])
    op.create_table(
        "lots",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("remaining", sa.BigInteger(), nullable=False),
        sa.Column("expired", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_lots"),
        sa.CheckConstraint(
            "amount > 0 AND amount <= 1000000000", name=op.f("ck_lots_amount_in_range")
        ),
        sa.CheckConstraint(
            "remaining >= 0 AND remaining <= amount", name=op.f("ck_lots_remaining_in_range")
        ),
        sa.CheckConstraint(
            "expired >= 0 AND expired <= amount", name=op.f("ck_lots_expired_in_range")
        ),
    )
    op.create_index(
        "ix_lots_open_by_account",
        "lots",
        ["account_id", "expires_at", "id"],
        postgresql_where=sa.text("remaining > 0"),
    )
    op.create_index(
        "ix_lots_open_by_expiry",
        "lots",
        ["expires_at"],
        postgresql_where=sa.text("remaining > 0 AND expires_at IS NOT NULL"),
    )
    op.create_index(
        "ix_lots_transaction_id",
        "lots",
        ["transaction_id"],
        postgresql_using="brin",
        postgresql_with={"pages_per_range": 16},
    )
    op.create_table(
        "lot_allocations",
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("lot_id", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("transaction_id", "lot_id", name="pk_lot_allocations"),
    )
    op.create_table(
        "pending_credits",
        sa.Column("transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lot_expires_at", sa.DateTime(timezone=True)),
        sa.Column("lot_lifetime_days", sa.Integer()),
        sa.Column("settled_transaction_id", sa.BigInteger()),
        sa.Column("settled_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.PrimaryKeyConstraint("transaction_id", name="pk_pending_credits"),
        sa.UniqueConstraint(
            "settled_transaction_id", name="uq_pending_credits_settled_transaction_id"
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name="fk_pending_credits_transaction_id_transactions",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_pending_credits_member_id_members"
        ),
        sa.ForeignKeyConstraint(
            ["settled_transaction_id"],
            ["transactions.id"],
            name="fk_pending_credits_settled_transaction_id_transactions",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'vested', 'voided')",
            name=op.f("ck_pending_credits_status_known"),
        ),
    )
    op.create_index(
        "ix_pending_credits_due",
        "pending_credits",
        ["available_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )


def upgrade() -> None:
    _tables()
    connection = op.get_bind()
    for statement in _statements():  # raw: ':pending' inside the SQL is not a bind parameter
        connection.exec_driver_sql(statement)
    op.execute("SELECT questline_seed_reference_data()")


def downgrade() -> None:
    for name in reversed(FUNCTION_SIGNATURES):
        op.execute(f"DROP FUNCTION IF EXISTS {name}")
    op.drop_table("pending_credits")
    op.drop_table("lot_allocations")
    op.drop_table("lots")
    op.drop_table("postings")
    op.drop_table("transactions")
    op.drop_table("accounts")
    op.drop_table("currencies")


# --------------------------------------------------------------------------------------------
# Functions. Conventions: parameters p_*, locals v_*, outputs o_* (no clash with column names).
# Every value-moving function returns (o_status, o_tx, o_created_at). o_status is 'ok',
# 'replay' (same idempotency key, same input hash: the stored transaction, nothing moved) or
# a failure code; on a failure code NOTHING has been written, so the caller's transaction
# stays usable. Member accounts are locked (FOR NO KEY UPDATE, which does not block foreign
# key checks) in ascending id order; the issuance and sink accounts are never locked.
# Under READ COMMITTED each statement of a function takes a fresh snapshot, so whatever a
# statement reads after a lock statement includes the work of the transaction it waited for.
# --------------------------------------------------------------------------------------------

FUNCTION_SIGNATURES = [
    "questline_seed_ledger()",
    "questline_seed_reference_data()",
    "ledger_system_account(text, text)",
    "ledger_member_account(bigint, text, boolean)",
    "ledger_replay(text, text)",
    "ledger_grant(bigint, text, bigint, text, text, text, jsonb, text, text, timestamptz, integer)",
    "ledger_debit(bigint, text, bigint, text, text, text, text, jsonb, text, text)",
    "ledger_transfer(bigint, bigint, text, bigint, text, text, jsonb, text, text)",
    "ledger_pending_credit(bigint, text, bigint, timestamptz, timestamptz, integer, text, text,"
    " jsonb, text, text)",
    "ledger_settle_pending(bigint, text)",
    "ledger_vest_due(timestamptz, integer)",
    "ledger_reverse(bigint, text, text, jsonb, text, text)",
    "ledger_settle_expirations(timestamptz, integer)",
    "ledger_post_batch(bigint[], text[], bigint[], text[], text[], text[], text[], timestamptz[],"
    " text, integer)",
]

SEED = r"""
CREATE OR REPLACE FUNCTION questline_seed_ledger() RETURNS void LANGUAGE sql AS $$
    INSERT INTO currencies (key, name, spendable, expiring) VALUES
        ('points', 'Points', true, true),
        ('xp', 'Experience', false, false)
    ON CONFLICT (key) DO NOTHING;
    INSERT INTO accounts (key, member_id, currency, kind, allow_negative)
    SELECT 'system:' || k.kind || ':' || c.key, NULL, c.key, k.kind, true
    FROM currencies c
    CROSS JOIN (VALUES ('issuance'), ('redemptions'), ('expired'), ('adjustments')) k(kind)
    ON CONFLICT (key) DO NOTHING;
$$;

-- Every domain may add a questline_seed_<domain>() function; this one runs them all (the
-- test fixtures call it after emptying the tables).
CREATE OR REPLACE FUNCTION questline_seed_reference_data() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_fn text;
BEGIN
    FOR v_fn IN
        SELECT p.proname FROM pg_proc p
        WHERE p.proname LIKE 'questline\_seed\_%' AND p.proname <> 'questline_seed_reference_data'
          AND p.pronargs = 0 AND pg_function_is_visible(p.oid)
        ORDER BY p.proname
    LOOP
        EXECUTE format('SELECT %I()', v_fn);
    END LOOP;
END $$;
"""

HELPERS = r"""
CREATE OR REPLACE FUNCTION ledger_system_account(p_currency text, p_kind text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_key text := 'system:' || p_kind || ':' || p_currency;
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM accounts WHERE key = v_key;
    IF v_id IS NULL THEN
        INSERT INTO accounts (key, member_id, currency, kind, allow_negative)
        VALUES (v_key, NULL, p_currency, p_kind, true)
        ON CONFLICT (key) DO NOTHING;
        SELECT id INTO v_id FROM accounts WHERE key = v_key;
    END IF;
    RETURN v_id;
END $$;

-- The caller has checked that the member and the currency exist.
CREATE OR REPLACE FUNCTION ledger_member_account(
    p_member bigint, p_currency text, p_pending boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_key text := 'member:' || p_member || ':' || p_currency
                  || CASE WHEN p_pending THEN ':pending' ELSE '' END;
    v_id bigint;
BEGIN
    SELECT id INTO v_id FROM accounts WHERE key = v_key;
    IF v_id IS NULL THEN
        INSERT INTO accounts (key, member_id, currency, kind, allow_negative)
        VALUES (v_key, p_member, p_currency,
                CASE WHEN p_pending THEN 'pending' ELSE 'available' END, false)
        ON CONFLICT (key) DO NOTHING;
        SELECT id INTO v_id FROM accounts WHERE key = v_key;
    END IF;
    RETURN v_id;
END $$;

-- The stored outcome of an idempotency key: NULL status when the key is unused.
CREATE OR REPLACE FUNCTION ledger_replay(p_key text, p_hash text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_hash text;
BEGIN
    IF p_key IS NULL THEN
        RETURN;
    END IF;
    SELECT id, created_at, input_hash INTO o_tx, o_created_at, v_hash
    FROM transactions WHERE idempotency_key = p_key;
    IF FOUND THEN
        o_status := CASE WHEN v_hash IS NOT DISTINCT FROM p_hash THEN 'replay'
                         ELSE 'idempotency_conflict' END;
    END IF;
END $$;
"""

# Consumption of a member's unexpired lots, soonest-expiring first (NULLS LAST, then id):
# `take` yields (id, expires_at, amount) summing to {amount} when the funds suffice. It walks
# the partial index ix_lots_open_by_account in order; the first attempt looks at v_limit lots
# only (nearly every spend is covered by the first few), a retry with v_limit NULL at all.
# lots.amount <= 1e9 (a CHECK), so the running sums are integer, not numeric.
CONSUME = """avail AS (
        SELECT l.id, l.expires_at, u.usable,
               sum(u.usable) OVER (ORDER BY l.expires_at, l.id) AS upto
        FROM lots l
        CROSS JOIN LATERAL (SELECT CASE WHEN l.expires_at <= now() THEN 0
                                        ELSE l.remaining::integer END AS usable) u
        WHERE l.account_id = {account} AND l.remaining > 0
        ORDER BY l.expires_at, l.id
        LIMIT v_limit
    ), take AS (
        SELECT avail.id, avail.expires_at,
               LEAST(avail.usable, {amount} - (avail.upto - avail.usable)) AS amount
        FROM avail WHERE avail.usable > 0 AND avail.upto - avail.usable < {amount}
    )"""

REPLAY_CHECK = """SELECT id, created_at, input_hash INTO o_tx, o_created_at, v_hash
    FROM transactions WHERE idempotency_key = p_key;
    IF FOUND THEN
        o_status := CASE WHEN v_hash IS NOT DISTINCT FROM p_hash THEN 'replay'
                         ELSE 'idempotency_conflict' END;
        RETURN;
    END IF;"""

AMOUNT_CHECK = """IF p_amount IS NULL OR p_amount <= 0 OR p_amount > 1000000000 THEN
        o_status := 'invalid_amount';
        RETURN;
    END IF;"""

GRANT = r"""
-- Issuance -> member available account, with a lot. The issuance account is only read: no
-- row lock, no running balance. Two statements: look the accounts up, then one statement
-- that claims the idempotency key and writes everything (or nothing, if the key exists).
CREATE OR REPLACE FUNCTION ledger_grant(
    p_member bigint, p_currency text, p_amount bigint, p_kind text, p_memo text,
    p_reference text, p_metadata jsonb, p_key text, p_hash text, p_expires_at timestamptz,
    p_lifetime_days integer,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_expiring boolean;
    v_acc bigint;
    v_issuance bigint;
    v_expires timestamptz;
    v_hash text;
BEGIN
    AMOUNT_CHECK
    SELECT c.expiring,
           (SELECT a.id FROM accounts a WHERE a.key = 'member:' || p_member || ':' || p_currency),
           (SELECT a.id FROM accounts a WHERE a.key = 'system:issuance:' || p_currency)
      INTO v_expiring, v_acc, v_issuance
      FROM currencies c WHERE c.key = p_currency;
    IF NOT FOUND THEN
        o_status := 'unknown_currency';
        RETURN;
    END IF;
    IF v_expiring THEN
        IF p_expires_at IS NOT NULL AND p_expires_at <= now() THEN
            o_status := 'expiry_in_past';
            RETURN;
        END IF;
        v_expires := COALESCE(p_expires_at, now() + make_interval(days => p_lifetime_days));
    ELSIF p_expires_at IS NOT NULL THEN
        o_status := 'currency_never_expires';
        RETURN;
    END IF;
    IF v_acc IS NULL THEN
        PERFORM 1 FROM members WHERE id = p_member;
        IF NOT FOUND THEN
            o_status := 'not_found';
            RETURN;
        END IF;
        v_acc := ledger_member_account(p_member, p_currency, false);
    END IF;
    IF v_issuance IS NULL THEN
        v_issuance := ledger_system_account(p_currency, 'issuance');
    END IF;

    WITH t AS (
        INSERT INTO transactions (kind, memo, metadata, reference, member_id, idempotency_key,
                                  input_hash)
        VALUES (p_kind, p_memo, COALESCE(p_metadata, '{}'::jsonb), p_reference, p_member, p_key,
                p_hash)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, created_at
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT t.id, v.account_id, p_currency, v.amount
        FROM t, (VALUES (v_issuance, -p_amount), (v_acc, p_amount)) v(account_id, amount)
    ), l AS (
        INSERT INTO lots (account_id, transaction_id, amount, remaining, expires_at)
        SELECT v_acc, t.id, p_amount, p_amount, v_expires FROM t
    ), b AS (
        UPDATE accounts SET balance = balance + p_amount
        WHERE id = v_acc AND EXISTS (SELECT 1 FROM t)
    )
    SELECT t.id, t.created_at INTO o_tx, o_created_at FROM t;
    IF o_tx IS NOT NULL THEN
        o_status := 'ok';
        RETURN;
    END IF;
    -- the key exists (a twin may just have committed it: ON CONFLICT waited for it)
    REPLAY_CHECK
    o_status := 'idempotency_conflict';  -- unreachable: the key was there a moment ago
END $$;
"""

DEBIT = r"""
-- Member available account -> a sink (spend: redemptions, deduct: adjustments), consuming
-- unexpired lots soonest-expiring first and recording the allocation.
CREATE OR REPLACE FUNCTION ledger_debit(
    p_member bigint, p_currency text, p_amount bigint, p_kind text, p_sink text,
    p_memo text, p_reference text, p_metadata jsonb, p_key text, p_hash text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_spendable boolean;
    v_acc bigint;
    v_sink bigint;
    v_hash text;
    v_limit integer := 8;
BEGIN
    AMOUNT_CHECK
    SELECT c.spendable,
           (SELECT a.id FROM accounts a WHERE a.key = 'member:' || p_member || ':' || p_currency),
           (SELECT a.id FROM accounts a WHERE a.key = 'system:' || p_sink || ':' || p_currency)
      INTO v_spendable, v_acc, v_sink
      FROM currencies c WHERE c.key = p_currency;
    IF NOT FOUND THEN
        o_status := 'unknown_currency';
        RETURN;
    END IF;
    IF p_kind = 'spend' AND NOT v_spendable THEN
        o_status := 'not_spendable';
        RETURN;
    END IF;
    IF v_acc IS NULL THEN  -- never credited: a replay, an unknown member, or no funds
        REPLAY_CHECK
        PERFORM 1 FROM members WHERE id = p_member;
        o_status := CASE WHEN FOUND THEN 'insufficient_funds' ELSE 'not_found' END;
        RETURN;
    END IF;
    IF v_sink IS NULL THEN
        v_sink := ledger_system_account(p_currency, p_sink);
    END IF;

    PERFORM 1 FROM accounts WHERE id = v_acc FOR NO KEY UPDATE;
    -- After the lock a twin with the same key has committed: the INSERT below then claims
    -- nothing (ON CONFLICT), and the check after the loop answers replay or conflict.
    LOOP
        WITH CONSUME_FROM_ACC, t AS (
            INSERT INTO transactions (kind, memo, metadata, reference, member_id,
                                      idempotency_key, input_hash)
            SELECT p_kind, p_memo, COALESCE(p_metadata, '{}'::jsonb), p_reference, p_member,
                   p_key, p_hash
            WHERE (SELECT COALESCE(sum(take.amount), 0) FROM take) = p_amount
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, created_at
        ), u AS (
            UPDATE lots l SET remaining = l.remaining - take.amount
            FROM take, t WHERE l.id = take.id
            RETURNING t.id AS tx_id, l.id AS lot_id, take.amount
        ), a AS (
            INSERT INTO lot_allocations (transaction_id, lot_id, amount)
            SELECT u.tx_id, u.lot_id, u.amount FROM u
        ), p AS (
            INSERT INTO postings (transaction_id, account_id, currency, amount)
            SELECT t.id, v.account_id, p_currency, v.amount
            FROM t, (VALUES (v_acc, -p_amount), (v_sink, p_amount)) v(account_id, amount)
        ), b AS (
            UPDATE accounts SET balance = balance - p_amount
            WHERE id = v_acc AND EXISTS (SELECT 1 FROM t)
        )
        SELECT t.id, t.created_at INTO o_tx, o_created_at FROM t;
        EXIT WHEN o_tx IS NOT NULL OR v_limit IS NULL;
        v_limit := NULL;  -- the first lots did not cover it: look at all of them
    END LOOP;
    IF o_tx IS NOT NULL THEN
        o_status := 'ok';
        RETURN;
    END IF;
    REPLAY_CHECK
    o_status := 'insufficient_funds';
END $$;
"""

TRANSFER = r"""
-- Member -> member. The sender's consumed lots become lots of the receiver with the same
-- expiry (grouped by expires_at), so a transfer never extends the life of points. Both member
-- accounts are locked in ascending id order, so opposite transfers cannot deadlock.
CREATE OR REPLACE FUNCTION ledger_transfer(
    p_from bigint, p_to bigint, p_currency text, p_amount bigint, p_memo text, p_reference text,
    p_metadata jsonb, p_key text, p_hash text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_spendable boolean;
    v_from bigint;
    v_to bigint;
    v_hash text;
    v_limit integer := 8;
BEGIN
    AMOUNT_CHECK
    IF p_from = p_to THEN
        o_status := 'same_account';
        RETURN;
    END IF;
    SELECT c.spendable,
           (SELECT a.id FROM accounts a WHERE a.key = 'member:' || p_from || ':' || p_currency),
           (SELECT a.id FROM accounts a WHERE a.key = 'member:' || p_to || ':' || p_currency)
      INTO v_spendable, v_from, v_to
      FROM currencies c WHERE c.key = p_currency;
    IF NOT FOUND THEN
        o_status := 'unknown_currency';
        RETURN;
    END IF;
    IF NOT v_spendable THEN
        o_status := 'not_spendable';
        RETURN;
    END IF;
    IF v_from IS NULL THEN
        REPLAY_CHECK
        PERFORM 1 FROM members WHERE id = p_from;
        o_status := CASE WHEN FOUND THEN 'insufficient_funds' ELSE 'not_found' END;
        RETURN;
    END IF;
    IF v_to IS NULL THEN
        PERFORM 1 FROM members WHERE id = p_to;
        IF NOT FOUND THEN
            o_status := 'receiver_not_found';
            RETURN;
        END IF;
        v_to := ledger_member_account(p_to, p_currency, false);
    END IF;

    PERFORM 1 FROM accounts WHERE id = LEAST(v_from, v_to) FOR NO KEY UPDATE;
    PERFORM 1 FROM accounts WHERE id = GREATEST(v_from, v_to) FOR NO KEY UPDATE;
    -- a twin with the same key: see ledger_debit
    LOOP
        WITH CONSUME_FROM_FROM, t AS (
            INSERT INTO transactions (kind, memo, metadata, reference, member_id,
                                      idempotency_key, input_hash)
            SELECT 'transfer', p_memo,
                   COALESCE(p_metadata, '{}'::jsonb) || jsonb_build_object('to_member', p_to),
                   p_reference, p_from, p_key, p_hash
            WHERE (SELECT COALESCE(sum(take.amount), 0) FROM take) = p_amount
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id, created_at
        ), u AS (
            UPDATE lots l SET remaining = l.remaining - take.amount
            FROM take, t WHERE l.id = take.id
            RETURNING t.id AS tx_id, l.id AS lot_id, take.amount, take.expires_at
        ), a AS (
            INSERT INTO lot_allocations (transaction_id, lot_id, amount)
            SELECT u.tx_id, u.lot_id, u.amount FROM u
        ), n AS (
            INSERT INTO lots (account_id, transaction_id, amount, remaining, expires_at)
            SELECT v_to, u.tx_id, sum(u.amount), sum(u.amount), u.expires_at
            FROM u GROUP BY u.tx_id, u.expires_at
        ), p AS (
            INSERT INTO postings (transaction_id, account_id, currency, amount)
            SELECT t.id, v.account_id, p_currency, v.amount
            FROM t, (VALUES (v_from, -p_amount), (v_to, p_amount)) v(account_id, amount)
        ), b AS (
            UPDATE accounts
            SET balance = balance + CASE WHEN id = v_from THEN -p_amount ELSE p_amount END
            WHERE id IN (v_from, v_to) AND EXISTS (SELECT 1 FROM t)
        )
        SELECT t.id, t.created_at INTO o_tx, o_created_at FROM t;
        EXIT WHEN o_tx IS NOT NULL OR v_limit IS NULL;
        v_limit := NULL;
    END LOOP;
    IF o_tx IS NOT NULL THEN
        o_status := 'ok';
        RETURN;
    END IF;
    REPLAY_CHECK
    o_status := 'insufficient_funds';
END $$;
"""


def _expand(sql: str) -> str:
    return (
        sql.replace("CONSUME_FROM_ACC", CONSUME.format(account="v_acc", amount="p_amount"))
        .replace("CONSUME_FROM_FROM", CONSUME.format(account="v_from", amount="p_amount"))
        .replace("CONSUME_FROM_POST", CONSUME.format(account="v_post.account_id", amount="v_need"))
        .replace("REPLAY_CHECK", REPLAY_CHECK)
        .replace("AMOUNT_CHECK", AMOUNT_CHECK)
    )


PENDING = r"""
-- Issuance -> member pending account (a return window). Vested later into a lot whose expiry
-- is p_lot_expires_at, else available_at + p_lifetime_days, else never.
CREATE OR REPLACE FUNCTION ledger_pending_credit(
    p_member bigint, p_currency text, p_amount bigint, p_available_at timestamptz,
    p_lot_expires_at timestamptz, p_lifetime_days integer, p_memo text, p_reference text,
    p_metadata jsonb, p_key text, p_hash text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_expiring boolean;
    v_acc bigint;
    v_issuance bigint;
BEGIN
    AMOUNT_CHECK
    SELECT c.expiring,
           (SELECT a.id FROM accounts a
            WHERE a.key = 'member:' || p_member || ':' || p_currency || ':pending'),
           (SELECT a.id FROM accounts a WHERE a.key = 'system:issuance:' || p_currency)
      INTO v_expiring, v_acc, v_issuance
      FROM currencies c WHERE c.key = p_currency;
    IF NOT FOUND THEN
        o_status := 'unknown_currency';
        RETURN;
    END IF;
    IF NOT v_expiring AND p_lot_expires_at IS NOT NULL THEN
        o_status := 'currency_never_expires';
        RETURN;
    END IF;
    IF p_lot_expires_at IS NOT NULL AND p_lot_expires_at <= GREATEST(p_available_at, now()) THEN
        o_status := 'expiry_in_past';
        RETURN;
    END IF;
    IF v_acc IS NULL THEN
        PERFORM 1 FROM members WHERE id = p_member;
        IF NOT FOUND THEN
            o_status := 'not_found';
            RETURN;
        END IF;
        v_acc := ledger_member_account(p_member, p_currency, true);
    END IF;
    IF v_issuance IS NULL THEN
        v_issuance := ledger_system_account(p_currency, 'issuance');
    END IF;

    WITH t AS (
        INSERT INTO transactions (kind, memo, metadata, reference, member_id, idempotency_key,
                                  input_hash)
        VALUES ('pending_credit', p_memo, COALESCE(p_metadata, '{}'::jsonb), p_reference,
                p_member, p_key, p_hash)
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, created_at
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT t.id, v.account_id, p_currency, v.amount
        FROM t, (VALUES (v_issuance, -p_amount), (v_acc, p_amount)) v(account_id, amount)
    ), pc AS (
        INSERT INTO pending_credits (transaction_id, member_id, currency, amount, available_at,
                                     lot_expires_at, lot_lifetime_days)
        SELECT t.id, p_member, p_currency, p_amount, p_available_at,
               CASE WHEN v_expiring THEN p_lot_expires_at END,
               CASE WHEN v_expiring THEN p_lifetime_days END
        FROM t
    ), b AS (
        UPDATE accounts SET balance = balance + p_amount
        WHERE id = v_acc AND EXISTS (SELECT 1 FROM t)
    )
    SELECT t.id, t.created_at INTO o_tx, o_created_at FROM t;

    IF o_tx IS NULL THEN
        SELECT r.o_status, r.o_tx, r.o_created_at INTO o_status, o_tx, o_created_at
        FROM ledger_replay(p_key, p_hash) r;
    ELSE
        o_status := 'ok';
    END IF;
END $$;

-- Vest (pending -> available, with a lot) or void (pending -> issuance) one pending credit.
-- The status moves from 'pending' exactly once; the transaction is keyed vest:<id> / void:<id>.
CREATE OR REPLACE FUNCTION ledger_settle_pending(p_pending_tx bigint, p_action text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_pc pending_credits%ROWTYPE;
    v_pending bigint;
    v_target bigint;
    v_expiring boolean;
BEGIN
    SELECT * INTO v_pc FROM pending_credits WHERE transaction_id = p_pending_tx;
    IF NOT FOUND THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    SELECT c.expiring INTO v_expiring FROM currencies c WHERE c.key = v_pc.currency;
    v_pending := ledger_member_account(v_pc.member_id, v_pc.currency, true);
    v_target := CASE WHEN p_action = 'vest'
                     THEN ledger_member_account(v_pc.member_id, v_pc.currency, false)
                     ELSE ledger_system_account(v_pc.currency, 'issuance') END;
    PERFORM 1 FROM accounts WHERE id IN (v_pending, v_target) AND NOT allow_negative
    ORDER BY id FOR NO KEY UPDATE;

    -- after the locks: a concurrent vest or void of the same credit has committed by now
    SELECT status, settled_transaction_id INTO v_pc.status, o_tx FROM pending_credits
    WHERE transaction_id = p_pending_tx;
    IF v_pc.status <> 'pending' THEN
        o_status := 'already_settled';
        RETURN;
    END IF;
    o_tx := nextval(pg_get_serial_sequence('transactions', 'id'));

    WITH t AS (
        INSERT INTO transactions (id, kind, metadata, reference, member_id, idempotency_key)
        VALUES (o_tx, p_action, jsonb_build_object('pending_transaction_id', p_pending_tx),
                'pending:' || p_pending_tx, v_pc.member_id, p_action || ':' || p_pending_tx)
        RETURNING id, created_at
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT t.id, v.account_id, v_pc.currency, v.amount
        FROM t, (VALUES (v_pending, -v_pc.amount), (v_target, v_pc.amount)) v(account_id, amount)
    ), l AS (
        INSERT INTO lots (account_id, transaction_id, amount, remaining, expires_at)
        SELECT v_target, t.id, v_pc.amount, v_pc.amount,
               CASE WHEN v_expiring THEN COALESCE(
                   v_pc.lot_expires_at,
                   v_pc.available_at + make_interval(days => v_pc.lot_lifetime_days)) END
        FROM t WHERE p_action = 'vest'
    ), s AS (
        UPDATE pending_credits
        SET status = CASE WHEN p_action = 'vest' THEN 'vested' ELSE 'voided' END,
            settled_at = now(), settled_transaction_id = t.id
        FROM t WHERE transaction_id = p_pending_tx
    ), b AS (
        UPDATE accounts a
        SET balance = a.balance + CASE WHEN a.id = v_pending THEN -v_pc.amount
                                       ELSE v_pc.amount END
        WHERE a.id IN (v_pending, v_target) AND NOT a.allow_negative
    )
    SELECT t.created_at INTO o_created_at FROM t;
    o_status := 'ok';
END $$;

-- Vest every pending credit due by p_as_of, at most p_limit of them, set-based.
CREATE OR REPLACE FUNCTION ledger_vest_due(p_as_of timestamptz, p_limit integer,
    OUT o_count integer, OUT o_amount bigint, OUT o_candidates integer)
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
    SELECT count(*), COALESCE(sum(d.amount), 0) INTO o_count, o_amount FROM d;
END $$;
"""

REVERSE = r"""
-- Reverse a transaction once (transactions.reverses_id is unique). Rules:
--  * expire, vest, void, pending_credit and reversal transactions cannot be reversed
--    (void a pending credit instead; correct a reversal with a new grant or deduct).
--  * amounts the original took out of a member's lots are put back into exactly those lots;
--    the part whose lot has expired by now goes straight to the expired account instead
--    (lots.expired grows), so the member never sees points that are already expired.
--  * amounts the original credited to a member are taken back from the lots that credit
--    created first: their remaining, and their expired part back out of the expired account;
--    any rest from the member's other unexpired lots, soonest-expiring first. A reversal never
--    drives a balance negative: if the member no longer holds enough, INSUFFICIENT_FUNDS.
--  * system accounts simply get the opposite amount.
CREATE OR REPLACE FUNCTION ledger_reverse(p_tx bigint, p_memo text, p_reference text,
    p_metadata jsonb, p_key text, p_hash text,
    OUT o_status text, OUT o_tx bigint, OUT o_created_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_orig transactions%ROWTYPE;
    v_post record;
    v_lot record;
    v_accs bigint[] := '{}';
    v_amts bigint[] := '{}';
    v_expired_acc bigint;
    v_need bigint;
    v_take_rem bigint;
    v_take_exp bigint;
    v_redirected bigint := 0;
    v_reclaimed bigint := 0;
    v_limit integer;  -- NULL: the consumption below looks at every lot
BEGIN
    SELECT r.o_status, r.o_tx, r.o_created_at INTO o_status, o_tx, o_created_at
    FROM ledger_replay(p_key, p_hash) r;
    IF o_status IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT * INTO v_orig FROM transactions WHERE id = p_tx;
    IF NOT FOUND THEN
        o_status := 'not_found';
        RETURN;
    END IF;
    IF v_orig.reverses_id IS NOT NULL
       OR v_orig.kind IN ('reversal', 'expire', 'vest', 'void', 'pending_credit')
       OR EXISTS (SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
                  WHERE p.transaction_id = p_tx AND a.kind = 'pending') THEN
        o_status := 'not_reversible';
        RETURN;
    END IF;

    PERFORM 1 FROM accounts a
    WHERE a.id IN (SELECT p.account_id FROM postings p WHERE p.transaction_id = p_tx)
      AND NOT a.allow_negative
    ORDER BY a.id FOR NO KEY UPDATE;
    -- after the locks: a concurrent reversal or idempotent twin has committed by now
    SELECT r.o_status, r.o_tx, r.o_created_at INTO o_status, o_tx, o_created_at
    FROM ledger_replay(p_key, p_hash) r;
    IF o_status IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT id, created_at INTO o_tx, o_created_at FROM transactions WHERE reverses_id = p_tx;
    IF FOUND THEN
        o_status := 'already_reversed';
        RETURN;
    END IF;

    -- Feasibility first (read only): every credited member account must still hold enough.
    FOR v_post IN
        SELECT p.account_id, sum(p.amount) AS amount FROM postings p
        JOIN accounts a ON a.id = p.account_id
        WHERE p.transaction_id = p_tx AND a.kind = 'available'
        GROUP BY p.account_id HAVING sum(p.amount) > 0
    LOOP
        IF (SELECT COALESCE(sum(CASE WHEN l.transaction_id = p_tx THEN l.remaining + l.expired
                                     WHEN l.expires_at IS NULL OR l.expires_at > now()
                                     THEN l.remaining ELSE 0 END), 0)
            FROM lots l
            WHERE l.account_id = v_post.account_id
              AND (l.remaining > 0 OR l.transaction_id = p_tx)) < v_post.amount THEN
            o_status := 'insufficient_funds';
            o_tx := NULL;
            RETURN;
        END IF;
    END LOOP;

    o_tx := nextval(pg_get_serial_sequence('transactions', 'id'));
    INSERT INTO transactions (id, kind, memo, metadata, reference, member_id, idempotency_key,
                              input_hash, reverses_id)
    VALUES (o_tx, 'reversal', p_memo, COALESCE(p_metadata, '{}'::jsonb), p_reference,
            v_orig.member_id, p_key, p_hash, p_tx)
    ON CONFLICT DO NOTHING
    RETURNING created_at INTO o_created_at;
    IF NOT FOUND THEN  -- a twin on other accounts won the key: nothing written
        SELECT r.o_status, r.o_tx, r.o_created_at INTO o_status, o_tx, o_created_at
        FROM ledger_replay(p_key, p_hash) r;
        o_status := COALESCE(o_status, 'already_reversed');
        RETURN;
    END IF;

    FOR v_post IN
        SELECT p.account_id, a.kind, a.currency, sum(p.amount) AS amount
        FROM postings p JOIN accounts a ON a.id = p.account_id
        WHERE p.transaction_id = p_tx
        GROUP BY p.account_id, a.kind, a.currency
        ORDER BY p.account_id
    LOOP
        IF v_post.kind <> 'available' THEN
            v_accs := v_accs || v_post.account_id;
            v_amts := v_amts || (-v_post.amount);
            CONTINUE;
        END IF;
        v_expired_acc := ledger_system_account(v_post.currency, 'expired');
        IF v_post.amount < 0 THEN
            -- put back what the original took out of each lot
            FOR v_lot IN
                SELECT la.lot_id, la.amount, l.expires_at FROM lot_allocations la
                JOIN lots l ON l.id = la.lot_id
                WHERE la.transaction_id = p_tx AND l.account_id = v_post.account_id
                  AND la.amount > 0
                ORDER BY la.lot_id
            LOOP
                IF v_lot.expires_at IS NOT NULL AND v_lot.expires_at <= now() THEN
                    UPDATE lots SET expired = expired + v_lot.amount WHERE id = v_lot.lot_id;
                    v_accs := v_accs || v_expired_acc;
                    v_redirected := v_redirected + v_lot.amount;
                ELSE
                    UPDATE lots SET remaining = remaining + v_lot.amount WHERE id = v_lot.lot_id;
                    v_accs := v_accs || v_post.account_id;
                END IF;
                v_amts := v_amts || v_lot.amount;
                INSERT INTO lot_allocations (transaction_id, lot_id, amount)
                VALUES (o_tx, v_lot.lot_id, -v_lot.amount);
            END LOOP;
        ELSE
            v_need := v_post.amount;
            -- the credit's own lots first: their remaining, and their expired part
            FOR v_lot IN
                SELECT l.id, l.remaining, l.expired FROM lots l
                WHERE l.transaction_id = p_tx AND l.account_id = v_post.account_id
                ORDER BY l.id
            LOOP
                EXIT WHEN v_need = 0;
                v_take_rem := LEAST(v_lot.remaining, v_need);
                v_need := v_need - v_take_rem;
                v_take_exp := LEAST(v_lot.expired, v_need);
                v_need := v_need - v_take_exp;
                CONTINUE WHEN v_take_rem + v_take_exp = 0;
                UPDATE lots SET remaining = remaining - v_take_rem, expired = expired - v_take_exp
                WHERE id = v_lot.id;
                INSERT INTO lot_allocations (transaction_id, lot_id, amount)
                VALUES (o_tx, v_lot.id, v_take_rem + v_take_exp);
                v_accs := v_accs || v_post.account_id || v_expired_acc;
                v_amts := v_amts || (-v_take_rem) || (-v_take_exp);
                v_reclaimed := v_reclaimed + v_take_exp;
            END LOOP;
            IF v_need > 0 THEN  -- then other unexpired lots, soonest-expiring first
                WITH CONSUME_FROM_POST, u AS (
                    UPDATE lots l SET remaining = l.remaining - take.amount
                    FROM take WHERE l.id = take.id
                    RETURNING l.id, take.amount
                )
                INSERT INTO lot_allocations (transaction_id, lot_id, amount)
                SELECT o_tx, u.id, u.amount FROM u;
                v_accs := v_accs || v_post.account_id;
                v_amts := v_amts || (-v_need);
            END IF;
        END IF;
    END LOOP;

    INSERT INTO postings (transaction_id, account_id, currency, amount)
    SELECT o_tx, s.account_id, a.currency, s.amount
    FROM (SELECT x.account_id, sum(x.amount) AS amount
          FROM unnest(v_accs, v_amts) x(account_id, amount) GROUP BY x.account_id) s
    JOIN accounts a ON a.id = s.account_id
    WHERE s.amount <> 0;
    UPDATE accounts a SET balance = a.balance + s.amount
    FROM (SELECT x.account_id, sum(x.amount) AS amount
          FROM unnest(v_accs, v_amts) x(account_id, amount) GROUP BY x.account_id) s
    WHERE a.id = s.account_id AND NOT a.allow_negative AND s.amount <> 0;
    IF v_redirected + v_reclaimed > 0 THEN
        UPDATE transactions
        SET metadata = metadata || jsonb_build_object('redirected_to_expired', v_redirected,
                                                      'reclaimed_from_expired', v_reclaimed)
        WHERE id = o_tx;
    END IF;
    o_status := 'ok';
END $$;
"""

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
    OUT o_lots integer, OUT o_amount bigint, OUT o_candidates integer)
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
    SELECT count(*), COALESCE(sum(d.amount), 0) INTO o_lots, o_amount FROM d;
END $$;
"""

BATCH = r"""
-- Many grants in one round trip (imports): one transaction, two postings and one lot per
-- entry, set-based. Validates everything first and writes nothing when an entry is invalid:
-- then it returns only the failing entries (status other than 'ok'/'replay'). Entries whose
-- key already exists with the same hash are replays. New keys are inserted with a plain
-- INSERT: if a concurrent batch commits one of them in between, the unique index raises and
-- the whole call fails (the caller rolls back and retries, and then gets replays).
CREATE OR REPLACE FUNCTION ledger_post_batch(
    p_members bigint[], p_currencies text[], p_amounts bigint[], p_keys text[], p_hashes text[],
    p_memos text[], p_references text[], p_expires timestamptz[], p_kind text,
    p_lifetime_days integer)
RETURNS TABLE (o_index integer, o_status text, o_tx bigint, o_created_at timestamptz)
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('transactions', 'id')::regclass;
    v_failed integer;
BEGIN
    RETURN QUERY
    WITH e AS (
        SELECT x.ord::integer AS idx, x.member_id, x.currency, x.amount, x.expires_at, x.key,
               x.hash
        FROM unnest(p_members, p_currencies, p_amounts, p_expires, p_keys, p_hashes)
             WITH ORDINALITY x(member_id, currency, amount, expires_at, key, hash, ord)
    )
    SELECT e.idx,
           CASE WHEN e.amount IS NULL OR e.amount <= 0 OR e.amount > 1000000000
                THEN 'invalid_amount'
                WHEN c.key IS NULL THEN 'unknown_currency'
                WHEN m.id IS NULL THEN 'not_found'
                WHEN e.expires_at IS NOT NULL AND NOT c.expiring THEN 'currency_never_expires'
                WHEN e.expires_at IS NOT NULL AND e.expires_at <= now() THEN 'expiry_in_past'
                ELSE 'idempotency_conflict' END,
           t.id, t.created_at
    FROM e
    LEFT JOIN currencies c ON c.key = e.currency
    -- LATERAL: one index probe per entry (a join would hash whole tables)
    LEFT JOIN LATERAL (SELECT mm.id FROM members mm WHERE mm.id = e.member_id) m ON true
    LEFT JOIN LATERAL (SELECT tt.id, tt.created_at, tt.input_hash FROM transactions tt
                       WHERE tt.idempotency_key = e.key) t ON true
    WHERE e.amount IS NULL OR e.amount <= 0 OR e.amount > 1000000000
       OR c.key IS NULL OR m.id IS NULL
       OR (e.expires_at IS NOT NULL AND (NOT c.expiring OR e.expires_at <= now()))
       OR (t.id IS NOT NULL AND t.input_hash IS DISTINCT FROM e.hash);
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    IF v_failed > 0 THEN
        RETURN;
    END IF;

    INSERT INTO accounts (key, member_id, currency, kind, allow_negative)
    SELECT DISTINCT 'member:' || x.member_id || ':' || x.currency, x.member_id, x.currency,
           'available', false
    FROM unnest(p_members, p_currencies) x(member_id, currency)
    WHERE NOT EXISTS (SELECT 1 FROM accounts a
                      WHERE a.key = 'member:' || x.member_id || ':' || x.currency)
    ORDER BY 1
    ON CONFLICT (key) DO NOTHING;
    PERFORM ledger_system_account(c.currency, 'issuance')
    FROM (SELECT DISTINCT x.currency FROM unnest(p_currencies) x(currency)) c;
    PERFORM 1 FROM accounts a
    WHERE a.key IN (SELECT 'member:' || x.member_id || ':' || x.currency
                    FROM unnest(p_members, p_currencies) x(member_id, currency))
    ORDER BY a.id FOR NO KEY UPDATE;

    RETURN QUERY
    WITH e AS MATERIALIZED (
        SELECT x.ord::integer AS idx, x.member_id, x.currency, x.amount, x.key, x.hash, x.memo,
               x.reference, a.id AS acc, i.id AS issuance, prior.id AS prior_id,
               prior.created_at AS prior_created_at,
               CASE WHEN c.expiring THEN COALESCE(
                   x.expires_at, now() + make_interval(days => p_lifetime_days)) END AS expires_at
        FROM unnest(p_members, p_currencies, p_amounts, p_keys, p_hashes, p_memos,
                    p_references, p_expires)
             WITH ORDINALITY x(member_id, currency, amount, key, hash, memo, reference,
                               expires_at, ord)
        JOIN currencies c ON c.key = x.currency
        JOIN accounts a ON a.key = 'member:' || x.member_id || ':' || x.currency
        JOIN accounts i ON i.key = 'system:issuance:' || x.currency
        LEFT JOIN LATERAL (SELECT tt.id, tt.created_at FROM transactions tt
                           WHERE tt.idempotency_key = x.key) prior ON true
    ), n AS MATERIALIZED (
        SELECT e.*, nextval(v_seq) AS tx_id FROM e WHERE e.prior_id IS NULL
    ), t AS (
        INSERT INTO transactions (id, kind, memo, reference, member_id, idempotency_key,
                                  input_hash)
        SELECT n.tx_id, p_kind, n.memo, n.reference, n.member_id, n.key, n.hash FROM n
    ), p AS (
        INSERT INTO postings (transaction_id, account_id, currency, amount)
        SELECT n.tx_id, x.account_id, n.currency, x.amount
        FROM n CROSS JOIN LATERAL
             (VALUES (n.issuance, -n.amount), (n.acc, n.amount)) x(account_id, amount)
    ), l AS (
        INSERT INTO lots (account_id, transaction_id, amount, remaining, expires_at)
        SELECT n.acc, n.tx_id, n.amount, n.amount, n.expires_at FROM n
    ), b AS (
        UPDATE accounts a SET balance = a.balance + s.total
        FROM (SELECT n.acc, sum(n.amount) AS total FROM n GROUP BY n.acc) s
        WHERE a.id = s.acc
    )
    SELECT e.idx, CASE WHEN e.prior_id IS NULL THEN 'ok' ELSE 'replay' END,
           COALESCE(e.prior_id, n.tx_id), COALESCE(e.prior_created_at, now())
    FROM e LEFT JOIN n ON n.idx = e.idx
    ORDER BY e.idx;
END $$;
"""

FUNCTIONS = [SEED, HELPERS, GRANT, DEBIT, TRANSFER, PENDING, REVERSE, SETTLE, BATCH]


def _statements() -> list[str]:
    """One CREATE FUNCTION per statement (asyncpg prepares each statement on its own)."""
    chunks: list[str] = []
    for block in FUNCTIONS:
        for chunk in re.split(r"(?m)^(?=CREATE OR REPLACE FUNCTION)", block):
            if "CREATE OR REPLACE FUNCTION" in chunk:
                chunks.append(_expand(chunk).strip())
    return chunks
