"""An event that completes quests in ONE statement: ``quests_reward_grant_hash`` gives a quest
reward's ledger grant the same input hash ``ledger.service.grant`` would compute in Python
(``ledger._calls.input_hash``), so the one-statement form of ``recordEvent``
(``quests.event_at_once``) can call ``ledger_grant`` itself for each reward of the quests the
event completes, keyed ``quest:<progress id>:<index>`` as ``quests.rewards.grant_rewards``
keys them, with the reference ``quest:<progress id>`` that only the statement knows.

``questline_json_ascii`` encodes a text as Python's ``json.dumps`` does by default: a JSON
string with DEL and every character beyond ASCII escaped as ``\\uXXXX`` (UTF-16 surrogate
pairs beyond the Basic Multilingual Plane). PostgreSQL's ``to_json`` escapes the same
control characters and quotes, in the same way, but leaves other characters as they are.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_ASCII = r"""
CREATE FUNCTION questline_json_ascii(p text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
SELECT CASE WHEN j ~ '^[\x01-\x7e]*$' THEN j ELSE (
    SELECT string_agg(
        CASE WHEN ascii(c) < 127 THEN c
             WHEN ascii(c) < 65536 THEN '\u' || lpad(to_hex(ascii(c)), 4, '0')
             ELSE '\u' || to_hex(55296 + ((ascii(c) - 65536) >> 10))
                  || '\u' || to_hex(56320 + ((ascii(c) - 65536) & 1023))
        END, '' ORDER BY i)
    FROM regexp_split_to_table(j, '') WITH ORDINALITY AS t(c, i)) END
FROM (SELECT to_json(p)::text AS j) AS encoded
$$;
"""

# The canonical JSON of ``input_hash("grant", {...})`` as ``quests.rewards.grant_rewards``
# calls ``ledger.service.grant``: keys sorted, no spaces, no metadata and no explicit expiry.
REWARD_GRANT_HASH = r"""
CREATE FUNCTION quests_reward_grant_hash(
    p_member bigint, p_amount bigint, p_currency text, p_memo text, p_reference text,
    p_lifetime_days integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT encode(sha256(convert_to(
    '["grant",{"amount":' || p_amount
    || ',"currency":' || questline_json_ascii(p_currency)
    || ',"expires_at":null,"kind":"reward","lifetime_days":'
    || coalesce(p_lifetime_days::text, 'null')
    || ',"member":' || p_member
    || ',"memo":' || coalesce(questline_json_ascii(p_memo), 'null')
    || ',"metadata":null,"reference":' || questline_json_ascii(p_reference) || '}]',
    'UTF8')), 'hex')
$$;
"""


def upgrade() -> None:
    op.execute(JSON_ASCII.strip())
    op.get_bind().exec_driver_sql(REWARD_GRANT_HASH.strip())  # raw: ":null" is no parameter


def downgrade() -> None:
    op.execute("DROP FUNCTION quests_reward_grant_hash(bigint, bigint, text, text, text, integer)")
    op.execute("DROP FUNCTION questline_json_ascii(text)")
