"""``quests_reward_grant_hash`` (migration 0018) gives the same input hash as
``ledger._calls.input_hash`` for a quest reward's grant, whatever the memo and currency hold:
the one-statement ``recordEvent`` and the transaction post identical transactions."""

from __future__ import annotations

import json

from sqlalchemy import text

from ledger._calls import input_hash
from server.runtime import Runtime

# Every character PostgreSQL text can hold up to U+07FF (quotes, backslash, controls, DEL,
# Latin and beyond), and some beyond: BMP symbols, the last BMP character, astral ones.
SAMPLES = [chr(c) for c in range(1, 0x800)] + ["☕", "中文", "\uffff", "😀", "\U0010ffff"]


async def test_json_ascii_escapes_as_python_json_dumps(runtime: Runtime) -> None:
    async with runtime.sessionmaker() as session:
        rows = await session.execute(
            text("SELECT s, questline_json_ascii(s) FROM unnest(CAST(:s AS text[])) AS s"),
            {"s": [f"a{sample}b" for sample in SAMPLES]},
        )
        wrong = [(s, encoded) for s, encoded in rows if encoded != json.dumps(s)]
    assert wrong == []


async def test_reward_grant_hash_is_the_ledgers_input_hash(runtime: Runtime) -> None:
    cases = [
        (12, 10, "points", 'Quest: Coffee ☕ "double" \\ shot\n', "quest:55", 365),
        (7, 5, "xp", "Quest: 😀", "quest:1", None),
        (3, 1, "stars", None, "quest:9", 0),
    ]
    async with runtime.sessionmaker() as session:
        for member, amount, currency, memo, reference, lifetime in cases:
            got = await session.scalar(
                text("SELECT quests_reward_grant_hash(:m, :a, :c, :memo, :r, :l)"),
                {"m": member, "a": amount, "c": currency, "memo": memo, "r": reference,
                 "l": lifetime},
            )  # fmt: skip
            fields = {
                "member": member,
                "amount": amount,
                "currency": currency,
                "memo": memo,
                "reference": reference,
                "metadata": None,
                "expires_at": None,
                "lifetime_days": lifetime,
                "kind": "reward",
            }
            assert got == input_hash("grant", fields), (memo, currency)
