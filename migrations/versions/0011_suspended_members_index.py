"""A partial index on suspended members.

Every API process refreshes the set of members hidden from leaderboards every few seconds;
without an index that was a scan of the whole members table (a million rows in the
leaderboard benchmark), competing with requests for the database's CPU.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_members_suspended",
        "members",
        ["id"],
        postgresql_where=text("status = 'suspended'"),
    )


def downgrade() -> None:
    op.drop_index("ix_members_suspended", table_name="members")
