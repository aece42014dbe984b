"""Webhooks: endpoints, the event outbox, deliveries and their attempts; the points.expired
trigger on ledger transactions.

Revision ID: 0008
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


# Expiry settlement is one set-based statement inside the ledger's PL/pgSQL (one `expire`
# transaction per lot, reference 'lot:<id>', the positive leg on the expired account). This
# trigger writes the points.expired outbox row in that same statement, so an expiry that
# commits always has its event and a rolled-back one never does, without a round trip or a
# change to the ledger. The WHEN clause keeps it free for every other kind of transaction; with
# no endpoint subscribed it stops at the EXISTS check.
POINTS_EXPIRED_FUNCTION = r"""
CREATE OR REPLACE FUNCTION webhooks_points_expired() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_event uuid := gen_random_uuid();
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhooks WHERE active AND 'points.expired' = ANY(events)) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_events (id, type, member_id, data, dedupe_key)
    SELECT v_event, 'points.expired', NEW.member_id,
           jsonb_build_object(
               'memberId', NEW.member_id::text,
               'externalId', m.external_id,
               'currency', p.currency,
               'amount', p.amount,
               'transactionId', NEW.id::text,
               'lotId', CASE WHEN NEW.reference LIKE 'lot:%' THEN substr(NEW.reference, 5) END,
               'expiredAt', NEW.created_at),
           'points.expired:' || NEW.id
    FROM postings p
    LEFT JOIN members m ON m.id = NEW.member_id
    WHERE p.transaction_id = NEW.id AND p.amount > 0
    LIMIT 1
    ON CONFLICT (dedupe_key) DO NOTHING;
    IF FOUND THEN
        INSERT INTO webhook_deliveries (event_id, webhook_id, event_type, next_attempt_at)
        SELECT v_event, w.id, 'points.expired', now()
        FROM webhooks w WHERE w.active AND 'points.expired' = ANY(w.events);
    END IF;
    RETURN NULL;
END $$
"""

CREATE_TRIGGER = """
CREATE TRIGGER webhooks_points_expired AFTER INSERT ON transactions
FOR EACH ROW WHEN (NEW.kind = 'expire') EXECUTE FUNCTION webhooks_points_expired()
"""


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(64)), nullable=False),
        sa.Column("secret", sa.String(255), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        _timestamp(),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_webhooks"),
        sa.UniqueConstraint("url", name="uq_webhooks_url"),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("member_id", sa.BigInteger()),
        sa.Column("data", postgresql.JSONB(), nullable=False),
        sa.Column("dedupe_key", sa.String(255)),
        _timestamp(),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_webhook_events_dedupe_key"),
    )
    op.create_index("ix_webhook_events_created_at", "webhook_events", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        _timestamp(),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name="ck_webhook_deliveries_status_known",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_events.id"],
            name="fk_webhook_deliveries_event_id_webhook_events",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name="fk_webhook_deliveries_webhook_id_webhooks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint("event_id", "webhook_id", name="uq_webhook_deliveries_event_id"),
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id", "id"])
    op.create_index("ix_webhook_deliveries_event_type", "webhook_deliveries", ["event_type", "id"])
    op.create_table(
        "webhook_delivery_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("delivery_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        _timestamp(),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name="fk_webhook_delivery_attempts_delivery_id_webhook_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_delivery_attempts"),
    )
    op.create_index(
        "ix_webhook_delivery_attempts_delivery_id",
        "webhook_delivery_attempts",
        ["delivery_id", "id"],
    )
    op.execute(POINTS_EXPIRED_FUNCTION)
    op.execute(CREATE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS webhooks_points_expired ON transactions")
    op.execute("DROP FUNCTION IF EXISTS webhooks_points_expired()")
    op.drop_table("webhook_delivery_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_events")
    op.drop_table("webhooks")
