"""``quests_completion_needs_transaction()``: raised (SQLSTATE ``QL420``) by the one-statement
form of ``recordEvent`` (``quests.event_at_once.record_event_at_once``) when the event completes a
quest. A completion grants rewards, which take more statements in one transaction, so the
statement undoes itself and the caller records the event in a transaction instead.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEEDS_TRANSACTION = r"""
CREATE FUNCTION quests_completion_needs_transaction() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'this event completes a quest: record it in a transaction'
        USING ERRCODE = 'QL420';
END $$;
"""


def upgrade() -> None:
    op.execute(NEEDS_TRANSACTION.strip())


def downgrade() -> None:
    op.execute("DROP FUNCTION quests_completion_needs_transaction()")
