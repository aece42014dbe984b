"""Redemption catalogue: items, coupon codes, redemptions, lottery entries and draws.

Stock is taken by a deferred constraint trigger on ``redemptions`` (see redemptions/service.py
for why): it runs inside COMMIT, so a popular item's row is locked only for the trigger and
the commit itself, never across a round trip to the API process.

Revision ID: 0006
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


# SQLSTATEs the trigger raises at commit; redemptions.service maps them to error codes.
TAKE_STOCK = r"""
CREATE OR REPLACE FUNCTION redemptions_take_stock() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_kind text;
    v_stock bigint;
BEGIN
    SELECT kind, stock INTO v_kind, v_stock FROM catalog_items WHERE id = NEW.item_id;
    IF v_stock IS NULL AND v_kind <> 'LOTTERY' THEN
        RETURN NULL;  -- unlimited: the item row is not touched at all
    END IF;
    UPDATE catalog_items SET stock = stock - NEW.quantity
    WHERE id = NEW.item_id AND (stock IS NULL OR stock >= NEW.quantity) AND drawn_at IS NULL;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM catalog_items WHERE id = NEW.item_id AND drawn_at IS NOT NULL)
        THEN
            RAISE EXCEPTION 'lottery % has been drawn', NEW.item_id USING ERRCODE = 'QL411';
        END IF;
        RAISE EXCEPTION 'item % is out of stock', NEW.item_id USING ERRCODE = 'QL410';
    END IF;
    RETURN NULL;
END $$
"""
TAKE_STOCK_TRIGGER = """
CREATE CONSTRAINT TRIGGER redemptions_take_stock AFTER INSERT ON redemptions
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION redemptions_take_stock()
"""


def upgrade() -> None:
    op.create_table(
        "catalog_items",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("kind", sa.String(16), server_default="REWARD", nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("stock", sa.BigInteger()),
        sa.Column("per_member_limit", sa.Integer()),
        sa.Column("min_tier_id", sa.BigInteger()),
        sa.Column("available_from", sa.DateTime(timezone=True)),
        sa.Column("available_until", sa.DateTime(timezone=True)),
        sa.Column("visible", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("drawn_at", sa.DateTime(timezone=True)),
        _created_at(),
        _created_at("updated_at"),
        sa.CheckConstraint(
            "kind IN ('REWARD', 'COUPON', 'LOTTERY')", name="ck_catalog_items_kind_known"
        ),
        sa.CheckConstraint(
            "cost > 0 AND cost <= 1000000000", name="ck_catalog_items_cost_in_range"
        ),
        sa.CheckConstraint(
            "stock IS NULL OR stock >= 0", name="ck_catalog_items_stock_non_negative"
        ),
        sa.CheckConstraint(
            "per_member_limit IS NULL OR per_member_limit > 0",
            name="ck_catalog_items_per_member_limit_positive",
        ),
        sa.CheckConstraint(
            "available_from IS NULL OR available_until IS NULL OR available_from < available_until",
            name="ck_catalog_items_window_ordered",
        ),
        sa.ForeignKeyConstraint(
            ["min_tier_id"], ["tiers.id"], name="fk_catalog_items_min_tier_id_tiers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_catalog_items"),
        sa.UniqueConstraint("key", name="uq_catalog_items_key"),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), server_default="PENDING", nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("input_hash", sa.String(64), nullable=False),
        sa.Column("spend_transaction_id", sa.BigInteger(), nullable=False),
        sa.Column("refund_transaction_id", sa.BigInteger()),
        sa.Column("code_revealed_at", sa.DateTime(timezone=True)),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_reason", sa.Text()),
        _created_at(),
        sa.CheckConstraint(
            "status IN ('PENDING', 'FULFILLED', 'CANCELLED')", name="ck_redemptions_status_known"
        ),
        sa.CheckConstraint("quantity > 0", name="ck_redemptions_quantity_positive"),
        sa.CheckConstraint("cost > 0 AND cost <= 1000000000", name="ck_redemptions_cost_in_range"),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_redemptions_member_id_members"
        ),
        sa.ForeignKeyConstraint(
            ["spend_transaction_id"],
            ["transactions.id"],
            name="fk_redemptions_spend_transaction_id_transactions",
        ),
        sa.ForeignKeyConstraint(
            ["refund_transaction_id"],
            ["transactions.id"],
            name="fk_redemptions_refund_transaction_id_transactions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_redemptions"),
        sa.UniqueConstraint(
            "member_id", "idempotency_key", name="uq_redemptions_member_id_idempotency_key"
        ),
    )
    op.execute(TAKE_STOCK)
    op.execute(TAKE_STOCK_TRIGGER)
    op.create_index("ix_redemptions_member_id_id", "redemptions", ["member_id", "id"])
    op.create_index("ix_redemptions_item_id_id", "redemptions", ["item_id", "id"])
    op.create_index("ix_redemptions_status_id", "redemptions", ["status", "id"])
    op.create_table(
        "coupon_codes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(255), nullable=False),
        sa.Column("redemption_id", sa.BigInteger()),
        sa.Column("assigned_at", sa.DateTime(timezone=True)),
        _created_at(),
        sa.ForeignKeyConstraint(
            ["item_id"], ["catalog_items.id"], name="fk_coupon_codes_item_id_catalog_items"
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemptions.id"],
            name="fk_coupon_codes_redemption_id_redemptions",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_coupon_codes"),
        sa.UniqueConstraint("item_id", "code", name="uq_coupon_codes_item_id_code"),
        sa.UniqueConstraint("redemption_id", name="uq_coupon_codes_redemption_id"),
    )
    op.create_index(
        "ix_coupon_codes_unassigned",
        "coupon_codes",
        ["item_id", "id"],
        postgresql_where=sa.text("redemption_id IS NULL"),
    )
    op.create_table(
        "lottery_entries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("redemption_id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), server_default="ACTIVE", nullable=False),
        _created_at(),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'CANCELLED', 'WON', 'LOST')",
            name="ck_lottery_entries_status_known",
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["redemptions.id"],
            name="fk_lottery_entries_redemption_id_redemptions",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_lottery_entries_member_id_members"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_lottery_entries"),
    )
    op.create_index("ix_lottery_entries_item_id_id", "lottery_entries", ["item_id", "id"])
    op.create_index("ix_lottery_entries_redemption_id", "lottery_entries", ["redemption_id"])
    op.create_table(
        "lottery_draws",
        sa.Column("item_id", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.String(64), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("winners_requested", sa.Integer(), nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("entries_digest", sa.String(64), nullable=False),
        _created_at("drawn_at"),
        sa.CheckConstraint(
            "winners_requested > 0", name="ck_lottery_draws_winners_requested_positive"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["catalog_items.id"], name="fk_lottery_draws_item_id_catalog_items"
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_lottery_draws"),
    )


def downgrade() -> None:
    op.drop_table("lottery_draws")
    op.drop_table("lottery_entries")
    op.drop_table("coupon_codes")
    op.execute("DROP TRIGGER IF EXISTS redemptions_take_stock ON redemptions")
    op.execute("DROP FUNCTION IF EXISTS redemptions_take_stock()")
    op.drop_table("redemptions")
    op.drop_table("catalog_items")
