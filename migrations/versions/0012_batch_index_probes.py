"""The batch entry point finds what it needs by index, never by hashing whole tables.

0002's ``ledger_post_batch`` joined the entries to ``transactions`` (idempotency keys) and to
``accounts`` (member and issuance accounts) with LATERAL subqueries and key expressions; the
planner flattens those into hash joins that read the whole table, so every call cost a scan
of ``transactions`` (twice) and of ``accounts`` (four times): the bigger the ledger, the slower
each import. Each lookup is now an index probe with ``= ANY(array)`` over the batch's own keys,
and the member accounts are locked and fetched by one statement. Same signature, same
results, same all-or-nothing rule. Its statements are always planned for the arrays at hand
(``plan_cache_mode = force_custom_plan``): a generic plan, made for arrays of unknown length,
chose nested loops that made a 5,000-entry call sixty times slower.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

from alembic import op

from server.migrate import earlier_revision

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = r"""
-- Many grants in one round trip (imports): one transaction, two postings and one lot per
-- entry, set-based. Validates everything first and writes nothing when an entry is invalid:
-- then it returns only the failing entries (status other than 'ok'/'replay'). Entries whose
-- key already exists with the same hash are replays. New keys are inserted with a plain
-- INSERT: if a concurrent batch commits one of them in between, the unique index raises and
-- the whole call fails (the caller rolls back and retries, and then gets replays).
-- Every lookup is an index probe over the batch's own keys (= ANY(array)).
CREATE OR REPLACE FUNCTION ledger_post_batch(
    p_members bigint[], p_currencies text[], p_amounts bigint[], p_keys text[], p_hashes text[],
    p_memos text[], p_references text[], p_expires timestamptz[], p_kind text,
    p_lifetime_days integer)
RETURNS TABLE (o_index integer, o_status text, o_tx bigint, o_created_at timestamptz)
LANGUAGE plpgsql SET jit = off SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_seq regclass := pg_get_serial_sequence('transactions', 'id')::regclass;
    v_failed integer;
    v_account_keys text[];
    v_issuance_keys text[];
    v_account_ids bigint[];
    v_locked_keys text[];
BEGIN
    RETURN QUERY
    WITH e AS (
        SELECT x.ord::integer AS idx, x.member_id, x.currency, x.amount, x.expires_at, x.key,
               x.hash
        FROM unnest(p_members, p_currencies, p_amounts, p_expires, p_keys, p_hashes)
             WITH ORDINALITY x(member_id, currency, amount, expires_at, key, hash, ord)
    ), known AS (
        SELECT mm.id FROM members mm WHERE mm.id = ANY(p_members)
    ), prior AS (
        SELECT tt.id, tt.created_at, tt.input_hash, tt.idempotency_key
        FROM transactions tt WHERE tt.idempotency_key = ANY(p_keys)
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
    LEFT JOIN known m ON m.id = e.member_id
    LEFT JOIN prior t ON t.idempotency_key = e.key
    WHERE e.amount IS NULL OR e.amount <= 0 OR e.amount > 1000000000
       OR c.key IS NULL OR m.id IS NULL
       OR (e.expires_at IS NOT NULL AND (NOT c.expiring OR e.expires_at <= now()))
       OR (t.id IS NOT NULL AND t.input_hash IS DISTINCT FROM e.hash);
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    IF v_failed > 0 THEN
        RETURN;
    END IF;

    SELECT array_agg(DISTINCT 'member:' || x.member_id || ':' || x.currency),
           array_agg(DISTINCT 'system:issuance:' || x.currency)
    INTO v_account_keys, v_issuance_keys
    FROM unnest(p_members, p_currencies) x(member_id, currency);

    INSERT INTO accounts (key, member_id, currency, kind, allow_negative)
    SELECT DISTINCT 'member:' || x.member_id || ':' || x.currency, x.member_id, x.currency,
           'available', false
    FROM unnest(p_members, p_currencies) x(member_id, currency)
    LEFT JOIN (SELECT a.key FROM accounts a WHERE a.key = ANY(v_account_keys)) known
           ON known.key = 'member:' || x.member_id || ':' || x.currency
    WHERE known.key IS NULL
    ORDER BY 1
    ON CONFLICT (key) DO NOTHING;
    PERFORM ledger_system_account(c.currency, 'issuance')
    FROM (SELECT DISTINCT x.currency FROM unnest(p_currencies) x(currency)) c;
    -- the member accounts, locked in id order (as every ledger operation locks them)
    SELECT array_agg(l.id), array_agg(l.key) INTO v_account_ids, v_locked_keys
    FROM (SELECT a.id, a.key FROM accounts a WHERE a.key = ANY(v_account_keys)
          ORDER BY a.id FOR NO KEY UPDATE) l;

    RETURN QUERY
    WITH acc AS (
        SELECT u.id, u.key FROM unnest(v_account_ids, v_locked_keys) u(id, key)
    ), iss AS (
        SELECT a.id, a.currency FROM accounts a WHERE a.key = ANY(v_issuance_keys)
    ), prior AS (
        SELECT tt.id, tt.created_at, tt.idempotency_key
        FROM transactions tt WHERE tt.idempotency_key = ANY(p_keys)
    ), e AS MATERIALIZED (
        SELECT x.ord::integer AS idx, x.member_id, x.currency, x.amount, x.key, x.hash, x.memo,
               x.reference, acc.id AS acc, iss.id AS issuance, prior.id AS prior_id,
               prior.created_at AS prior_created_at,
               CASE WHEN c.expiring THEN COALESCE(
                   x.expires_at, now() + make_interval(days => p_lifetime_days)) END AS expires_at
        FROM unnest(p_members, p_currencies, p_amounts, p_keys, p_hashes, p_memos,
                    p_references, p_expires)
             WITH ORDINALITY x(member_id, currency, amount, key, hash, memo, reference,
                               expires_at, ord)
        JOIN currencies c ON c.key = x.currency
        JOIN acc ON acc.key = 'member:' || x.member_id || ':' || x.currency
        JOIN iss ON iss.currency = x.currency
        LEFT JOIN prior ON prior.idempotency_key = x.key
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


def upgrade() -> None:
    op.execute(BATCH.strip())


def downgrade() -> None:
    ledger = earlier_revision("0002_ledger.py")
    op.execute(ledger.BATCH.strip())
