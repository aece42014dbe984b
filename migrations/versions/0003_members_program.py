"""Program settings, tiers, tier changes and lifecycle stages.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "program_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("welcome_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("birthday_points", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("points_lifetime_days", sa.Integer(), server_default="365"),
        sa.Column("pending_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column("referrer_reward", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("referee_reward", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("referral_qualifying_event", sa.String(64), server_default="purchase"),
        sa.Column("max_referral_rewards_per_month", sa.Integer()),
        sa.Column("new_member_days", sa.Integer(), server_default="7", nullable=False),
        sa.Column("retained_days", sa.Integer(), server_default="90", nullable=False),
        sa.Column("loyal_days", sa.Integer(), server_default="365", nullable=False),
        sa.Column("at_risk_days", sa.Integer(), server_default="15", nullable=False),
        sa.Column("lapsed_days", sa.Integer(), server_default="60", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_program_settings"),
    )
    op.create_table(
        "tiers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("xp_threshold", sa.BigInteger(), nullable=False),
        sa.Column("points_multiplier", sa.Numeric(6, 3), server_default="1.0", nullable=False),
        sa.Column("retention_xp", sa.BigInteger()),
        sa.Column("window_days", sa.Integer(), server_default="365"),
        sa.Column("benefits", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("xp_threshold >= 0", name="ck_tiers_xp_threshold_non_negative"),
        sa.CheckConstraint("points_multiplier > 0", name="ck_tiers_points_multiplier_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_tiers"),
        sa.UniqueConstraint("key", name="uq_tiers_key"),
        sa.UniqueConstraint("rank", name="uq_tiers_rank"),
    )
    op.add_column("members", sa.Column("tier_id", sa.BigInteger()))
    op.add_column("members", sa.Column("tier_since", sa.DateTime(timezone=True)))
    op.add_column("members", sa.Column("lifecycle_stage", sa.String(16)))
    op.create_foreign_key("fk_members_tier_id_tiers", "members", "tiers", ["tier_id"], ["id"])
    op.create_index("ix_members_tier_id", "members", ["tier_id"])
    op.create_table(
        "tier_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_tier_id", sa.BigInteger()),
        sa.Column("to_tier_id", sa.BigInteger()),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("xp_in_window", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_tier_changes_member_id_members"
        ),
        sa.ForeignKeyConstraint(
            ["from_tier_id"], ["tiers.id"], name="fk_tier_changes_from_tier_id_tiers"
        ),
        sa.ForeignKeyConstraint(
            ["to_tier_id"], ["tiers.id"], name="fk_tier_changes_to_tier_id_tiers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tier_changes"),
    )
    op.create_index("ix_tier_changes_member_id", "tier_changes", ["member_id"])
    op.create_table(
        "lifecycle_changes",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("from_stage", sa.String(16)),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name="fk_lifecycle_changes_member_id_members"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_lifecycle_changes"),
    )
    op.create_index("ix_lifecycle_changes_member_id", "lifecycle_changes", ["member_id"])


def downgrade() -> None:
    op.drop_table("lifecycle_changes")
    op.drop_table("tier_changes")
    op.drop_index("ix_members_tier_id", "members")
    op.drop_constraint("fk_members_tier_id_tiers", "members", type_="foreignkey")
    for column in ("lifecycle_stage", "tier_since", "tier_id"):
        op.drop_column("members", column)
    op.drop_table("tiers")
    op.drop_table("program_settings")
