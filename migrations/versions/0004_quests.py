"""Events, quests, quest progress, check-in streaks.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_OBJECT = sa.text("'{}'::jsonb")
JSON_LIST = sa.text("'[]'::jsonb")


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


# The aggregate rules of quests.progress, as one function the progress upsert can call.
NEXT_PROGRESS = """
CREATE FUNCTION quest_next_progress(
    aggregate text, progress numeric, days date[], last_day date, amount numeric, day date
) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE aggregate
        WHEN 'SUM' THEN progress + amount
        WHEN 'DISTINCT_DAYS' THEN
            CASE WHEN day = ANY(days) THEN progress ELSE progress + 1 END
        WHEN 'STREAK_DAYS' THEN
            CASE WHEN last_day IS NULL THEN 1
                 WHEN day = last_day + 1 THEN progress + 1
                 WHEN day <= last_day THEN progress
                 ELSE 1 END
        ELSE progress + 1
    END
$$
"""


def upgrade() -> None:
    op.execute(NEXT_PROGRESS)
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("properties", postgresql.JSONB(), server_default=JSON_OBJECT, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        _now("recorded_at"),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("input_hash", sa.String(64), nullable=False),
        sa.Column("result", postgresql.JSONB(), server_default=JSON_OBJECT, nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_events_member_id_members"),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("member_id", "idempotency_key", name="uq_events_member_id_key"),
    )
    op.create_index("ix_events_member_id_type", "events", ["member_id", "type"])
    op.create_index("ix_events_type_occurred_at", "events", ["type", "occurred_at"])
    op.create_table(
        "quests",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("cadence", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("filter", postgresql.JSONB(), server_default=JSON_OBJECT, nullable=False),
        sa.Column("aggregate", sa.String(16), server_default="COUNT", nullable=False),
        sa.Column("property", sa.String(64)),
        sa.Column("target", sa.BigInteger(), nullable=False),
        sa.Column("rewards", postgresql.JSONB(), server_default=JSON_LIST, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True)),
        sa.Column("ends_at", sa.DateTime(timezone=True)),
        sa.Column("min_tier_id", sa.BigInteger()),
        sa.Column("auto_claim", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        _now("updated_at"),
        sa.CheckConstraint("target > 0", name="ck_quests_target_positive"),
        sa.ForeignKeyConstraint(["min_tier_id"], ["tiers.id"], name="fk_quests_min_tier_id_tiers"),
        sa.PrimaryKeyConstraint("id", name="pk_quests"),
        sa.UniqueConstraint("key", name="uq_quests_key"),
    )
    op.create_index(
        "ix_quests_event_type_active", "quests", ["event_type"],
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "quest_progress",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("quest_id", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True)),
        sa.Column("aggregate", sa.String(16), server_default="COUNT", nullable=False),
        sa.Column("progress", sa.Numeric(20, 4), server_default="0", nullable=False),
        sa.Column("target", sa.BigInteger(), nullable=False),
        sa.Column("days", postgresql.ARRAY(sa.Date()), server_default="{}", nullable=False),
        sa.Column("last_day", sa.Date()),
        sa.Column("status", sa.String(16), server_default="IN_PROGRESS", nullable=False),
        sa.Column("completed_by_event_id", sa.BigInteger()),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("rewards", postgresql.JSONB()),
        _now("updated_at"),
        sa.CheckConstraint(
            "status IN ('IN_PROGRESS', 'COMPLETED', 'CLAIMED')",
            name="ck_quest_progress_status_known",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_quest_progress_member_id_members"
        ),
        sa.ForeignKeyConstraint(
            ["quest_id"], ["quests.id"], name="fk_quest_progress_quest_id_quests"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_quest_progress"),
        sa.UniqueConstraint(
            "member_id", "quest_id", "period_start", name="uq_quest_progress_member_period"
        ),
    )
    op.create_index(
        "ix_quest_progress_member_id", "quest_progress", ["member_id", "period_end"]
    )
    op.create_table(
        "check_in_rewards",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("xp", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("day", name="pk_check_in_rewards"),
    )
    op.create_table(
        "streaks",
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("current", sa.Integer(), server_default="0", nullable=False),
        sa.Column("longest", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_check_in_date", sa.Date()),
        sa.Column("last_check_in_at", sa.DateTime(timezone=True)),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name="fk_streaks_member_id_members"),
        sa.PrimaryKeyConstraint("member_id", name="pk_streaks"),
    )
    op.create_table(
        "check_ins",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("local_date", sa.Date(), nullable=False),
        sa.Column("streak_day", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("awards", postgresql.JSONB(), server_default=JSON_LIST, nullable=False),
        _now("created_at"),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_check_ins_member_id_members"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_check_ins"),
        sa.UniqueConstraint("member_id", "local_date", name="uq_check_ins_member_id_local_date"),
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION quest_next_progress(text, numeric, date[], date, numeric, date)")
    for table in ("check_ins", "streaks", "check_in_rewards", "quest_progress", "quests", "events"):
        op.drop_table(table)
