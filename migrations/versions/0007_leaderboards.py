"""Leaderboards: definitions, closed periods and their final standings.

Revision ID: 0007
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "leaderboards",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("event_type", sa.String(64)),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column(
            "rewards",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("stale_since", sa.DateTime(timezone=True)),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint(
            "metric IN ('POINTS_EARNED', 'XP_EARNED', 'EVENT_COUNT')",
            name="ck_leaderboards_metric_known",
        ),
        sa.CheckConstraint(
            "period IN ('DAILY', 'WEEKLY', 'MONTHLY', 'ALL_TIME')",
            name="ck_leaderboards_period_known",
        ),
        sa.CheckConstraint(
            "(metric = 'EVENT_COUNT') = (event_type IS NOT NULL)",
            name="ck_leaderboards_event_type_for_counts",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_leaderboards"),
        sa.UniqueConstraint("key", name="uq_leaderboards_key"),
    )
    op.create_table(
        "leaderboard_periods",
        sa.Column("leaderboard_id", sa.BigInteger(), nullable=False),
        sa.Column("period_id", sa.String(16), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("rewarded", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _timestamp("closed_at"),
        sa.ForeignKeyConstraint(
            ["leaderboard_id"],
            ["leaderboards.id"],
            name="fk_leaderboard_periods_leaderboard_id_leaderboards",
        ),
        sa.PrimaryKeyConstraint("leaderboard_id", "period_id", name="pk_leaderboard_periods"),
    )
    op.create_table(
        "leaderboard_standings",
        sa.Column("leaderboard_id", sa.BigInteger(), nullable=False),
        sa.Column("period_id", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("score", sa.BigInteger(), nullable=False),
        sa.Column("reached_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["leaderboard_id", "period_id"],
            ["leaderboard_periods.leaderboard_id", "leaderboard_periods.period_id"],
            name="fk_leaderboard_standings_leaderboard_id_leaderboard_periods",
        ),
        sa.PrimaryKeyConstraint(
            "leaderboard_id", "period_id", "rank", name="pk_leaderboard_standings"
        ),
    )
    op.create_index(
        "ix_leaderboard_standings_member",
        "leaderboard_standings",
        ["leaderboard_id", "period_id", "member_id"],
    )


def downgrade() -> None:
    op.drop_table("leaderboard_standings")
    op.drop_table("leaderboard_periods")
    op.drop_table("leaderboards")
