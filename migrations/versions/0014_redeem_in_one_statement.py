"""A redemption's writes in ONE statement: ``redemptions_redeem`` spends the points (calling
``ledger_debit``), checks the per-member limit again under the account lock, records the
member's activity, claims a coupon code and inserts the redemption and its lottery tickets.

Until now these were three statements of the caller's transaction (the spend, the limit, the
write). As one statement they also run on a plain autocommit connection, where the statement
is the whole transaction: no BEGIN and no COMMIT round trip (see ``redemptions.service``).
A refusal found after the spend raises, so the statement, spend included, writes nothing:
``QL412`` the per-member limit, ``QL413`` no coupon code left (``QL410`` and ``QL411``, the
stock trigger's, are 0006's).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REDEEM = r"""
-- o_status is ledger_debit's: anything but 'ok' means nothing was written ('replay': a twin
-- request with this key committed first). The stock is still taken at commit by the deferred
-- trigger redemptions_take_stock (0006).
CREATE FUNCTION redemptions_redeem(
    p_member bigint, p_item bigint, p_key text, p_quantity integer, p_total bigint,
    p_hash text, p_coupon boolean, p_lottery boolean, p_now timestamptz, p_limit integer,
    p_spend_key text, p_spend_hash text, p_memo text, p_reference text, p_metadata jsonb,
    OUT o_status text, OUT o_tx bigint, OUT o_tx_at timestamptz,
    OUT o_id bigint, OUT o_created_at timestamptz, OUT o_code text)
LANGUAGE plpgsql AS $$
DECLARE
    v_used bigint;
BEGIN
    SELECT d.o_status, d.o_tx, d.o_created_at INTO o_status, o_tx, o_tx_at
    FROM ledger_debit(p_member, 'points', p_total, 'spend', 'redemptions', p_memo,
                      p_reference, p_metadata, p_spend_key, p_spend_hash) d;
    IF o_status <> 'ok' THEN
        RETURN;
    END IF;
    IF p_limit IS NOT NULL THEN
        -- again, under the account lock the spend took: every redemption of this member
        -- queues on it, so two of them cannot both see the last unit of the allowance
        SELECT coalesce(sum(r.quantity), 0) INTO v_used FROM redemptions r
        WHERE r.member_id = p_member AND r.item_id = p_item AND r.status <> 'CANCELLED';
        IF v_used + p_quantity > p_limit THEN
            RAISE EXCEPTION 'at most % per member', p_limit USING ERRCODE = 'QL412';
        END IF;
    END IF;
    WITH touched AS (
        UPDATE members SET last_active_at = p_now
        WHERE id = p_member AND (last_active_at IS NULL OR last_active_at < p_now)
        RETURNING 1
    ), code AS (
        SELECT c.id FROM coupon_codes c
        WHERE p_coupon AND c.item_id = p_item AND c.redemption_id IS NULL
        ORDER BY c.id LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), r AS (
        INSERT INTO redemptions (member_id, item_id, quantity, cost, idempotency_key,
                                 input_hash, spend_transaction_id)
        SELECT p_member, p_item, p_quantity, p_total, p_key, p_hash, o_tx
        WHERE NOT p_coupon OR EXISTS (SELECT 1 FROM code)
        RETURNING id, created_at
    ), assigned AS (
        UPDATE coupon_codes c SET redemption_id = r.id, assigned_at = r.created_at
        FROM r, code WHERE c.id = code.id AND c.redemption_id IS NULL
        RETURNING c.code
    ), entries AS (
        INSERT INTO lottery_entries (item_id, redemption_id, member_id)
        SELECT p_item, r.id, p_member FROM r, generate_series(1, p_quantity) WHERE p_lottery
    )
    SELECT r.id, r.created_at, (SELECT a.code FROM assigned a)
      INTO o_id, o_created_at, o_code
      FROM r;
    IF o_id IS NULL THEN
        RAISE EXCEPTION 'no coupon codes left for item %', p_item USING ERRCODE = 'QL413';
    END IF;
END $$;
"""


def upgrade() -> None:
    op.execute(REDEEM.strip())


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION redemptions_redeem(bigint, bigint, text, integer, bigint, text, boolean,"
        " boolean, timestamptz, integer, text, text, text, text, jsonb)"
    )
