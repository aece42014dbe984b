"""Badges, titles, campaigns and referral rewards.

Revision ID: 0005
Revises: 0003
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _updated_at() -> sa.Column[Any]:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _member_fk(table: str, column: str = "member_id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["members.id"], name=f"fk_{table}_{column}_members")


def _badges() -> None:
    op.create_table(
        "badges",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("image_url", sa.String(2048)),
        sa.Column("levels", sa.Integer(), server_default="1", nullable=False),
        sa.Column("secret", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _updated_at(),
        sa.CheckConstraint("levels >= 1", name="ck_badges_levels_positive"),
        sa.PrimaryKeyConstraint("id", name="pk_badges"),
        sa.UniqueConstraint("key", name="uq_badges_key"),
    )
    op.create_table(
        "member_badges",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("badge_id", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("awarded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_awarded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("level >= 1", name="ck_member_badges_level_positive"),
        _member_fk("member_badges"),
        sa.ForeignKeyConstraint(
            ["badge_id"], ["badges.id"], name="fk_member_badges_badge_id_badges"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_member_badges"),
        sa.UniqueConstraint("member_id", "badge_id", name="uq_member_badges_member_id_badge_id"),
    )
    op.create_index("ix_member_badges_badge_id", "member_badges", ["badge_id"])


def _titles() -> None:
    op.create_table(
        "titles",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("max_holders", sa.Integer()),
        _updated_at(),
        sa.CheckConstraint(
            "max_holders IS NULL OR max_holders >= 1", name="ck_titles_max_holders_positive"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_titles"),
        sa.UniqueConstraint("key", name="uq_titles_key"),
    )
    op.create_table(
        "member_titles",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("member_id", sa.BigInteger(), nullable=False),
        sa.Column("title_id", sa.BigInteger(), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("equipped", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        _member_fk("member_titles"),
        sa.ForeignKeyConstraint(
            ["title_id"], ["titles.id"], name="fk_member_titles_title_id_titles"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_member_titles"),
        sa.UniqueConstraint("member_id", "title_id", name="uq_member_titles_member_id_title_id"),
    )
    op.create_index("ix_member_titles_title_id", "member_titles", ["title_id"])
    op.create_index(
        "uq_member_titles_equipped",
        "member_titles",
        ["member_id"],
        unique=True,
        postgresql_where=sa.text("equipped"),
    )


def _campaigns() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("multiplier", sa.Numeric(8, 3), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_types", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("min_tier_id", sa.BigInteger()),
        _updated_at(),
        sa.CheckConstraint("multiplier > 0", name="ck_campaigns_multiplier_positive"),
        sa.CheckConstraint("ends_at > starts_at", name="ck_campaigns_ends_after_start"),
        sa.ForeignKeyConstraint(
            ["min_tier_id"], ["tiers.id"], name="fk_campaigns_min_tier_id_tiers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_campaigns"),
        sa.UniqueConstraint("key", name="uq_campaigns_key"),
    )
    op.create_index("ix_campaigns_ends_at", "campaigns", ["ends_at"])


def _referrals() -> None:
    op.create_index("ix_members_referred_by_id", "members", ["referred_by_id"])
    op.create_table(
        "referral_rewards",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("referee_id", sa.BigInteger(), nullable=False),
        sa.Column("referrer_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("referee_amount", sa.BigInteger(), nullable=False),
        sa.Column("referrer_amount", sa.BigInteger(), nullable=False),
        sa.Column("referrer_outcome", sa.String(16), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("referee_transaction_id", sa.BigInteger()),
        sa.Column("referrer_transaction_id", sa.BigInteger()),
        sa.Column("rewarded_at", sa.DateTime(timezone=True), nullable=False),
        _member_fk("referral_rewards", "referee_id"),
        _member_fk("referral_rewards", "referrer_id"),
        sa.PrimaryKeyConstraint("id", name="pk_referral_rewards"),
        sa.UniqueConstraint("referee_id", name="uq_referral_rewards_referee_id"),
    )
    op.create_index("ix_referral_rewards_referrer_id", "referral_rewards", ["referrer_id"])
    op.create_table(
        "referral_monthly_counts",
        sa.Column("referrer_id", sa.BigInteger(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("rewarded", sa.Integer(), nullable=False),
        _member_fk("referral_monthly_counts", "referrer_id"),
        sa.PrimaryKeyConstraint("referrer_id", "month", name="pk_referral_monthly_counts"),
    )


def upgrade() -> None:
    _badges()
    _titles()
    _campaigns()
    _referrals()


def downgrade() -> None:
    op.drop_table("referral_monthly_counts")
    op.drop_table("referral_rewards")
    op.drop_index("ix_members_referred_by_id", "members")
    op.drop_table("campaigns")
    op.drop_table("member_titles")
    op.drop_table("titles")
    op.drop_table("member_badges")
    op.drop_table("badges")
