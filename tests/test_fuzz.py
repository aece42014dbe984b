"""A fuzz pass over the GraphQL API: operations generated from the live schema by
hypothesis-graphql, sent as an anonymous caller, a member, an events key and an admin.

Whatever comes in, the API must answer like an API: never an HTTP 500, never a stack trace or
a file path in the body, every error with a message, and no "Unexpected error." (the masked
form of an unhandled exception: a bug, even though it leaks nothing). The ledger is verified
after the test as after every test (conftest), so value moved by generated mutations (grants,
deductions, redemptions, reversals, settlements) must leave every invariant intact.

Valid operations (``Mode.POSITIVE``) exercise resolvers and services with arbitrary argument
values; invalid ones (``Mode.NEGATIVE``: wrong types, missing arguments) exercise validation.
So that generated operations get past the permission checks, three in four are built only from
the root fields the caller may use (the authorization matrix's table), and strings and ids are
half the time ones that name something that exists (the member, the item and quest ``a``).
The number of cases is bounded (``FUZZ_EXAMPLES``); on CI (``CI=true``) the examples are
derandomized so a run is reproducible, locally each run explores new ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import graphql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, from_schema, nodes

from schema.root import schema as root_schema
from server.auth import create_api_key
from server.runtime import Runtime
from tests.api import GraphQLClient, admin_token, member_token
from tests.support import plain_dsn
from tests.test_authorization_matrix import MATRIX

FUZZ_EXAMPLES = int(os.environ.get("QUESTLINE_FUZZ_EXAMPLES", "150"))
NEGATIVE_EXAMPLES = max(10, FUZZ_EXAMPLES // 3)
ON_CI = os.environ.get("CI") == "true"
ROLES = ("anonymous", "member", "events", "admin")
MEMBER = "fuzz-alice"

# What an internal error leaks when it is not masked: Python traceback lines, file paths.
LEAK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+|\.py:\d+")
MASKED = "Unexpected error."

# ---- values for the custom scalars (sometimes valid, sometimes not) --------------------------

GRAPHQL_NAME = st.from_regex(r"\A[_A-Za-z][_0-9A-Za-z]{0,11}\Z")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(GRAPHQL_NAME, children, max_size=4)
    ),
    max_leaves=12,
)


def json_node(value: Any) -> graphql.ValueNode:
    """A GraphQL literal for a JSON value."""
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    if isinstance(value, int):
        return nodes.Int(value)
    if isinstance(value, str):
        return nodes.String(value)
    if isinstance(value, list):
        return nodes.List([json_node(v) for v in value])
    return nodes.Object(
        [
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=json_node(v))
            for k, v in value.items()
        ]
    )


garbage = st.text(alphabet=string.printable, max_size=30)
any_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
# Strings and ids that name things that exist (half the time), so generated operations reach
# past "not found" into the services: the member, the item and quest keyed "a", currencies.
KNOWN_STRINGS = [MEMBER, "a", "points", "xp", "purchase", "active", "suspended", "check_in"]
datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
CUSTOM_SCALARS = {
    "String": (st.sampled_from(KNOWN_STRINGS) | any_text).map(nodes.String),
    "ID": (st.integers(1, 30).map(str) | any_text).map(nodes.String),
    "Date": (st.dates().map(lambda d: d.isoformat()) | garbage).map(nodes.String),
    "DateTime": (
        datetimes.map(lambda d: d.isoformat())
        | st.datetimes().map(lambda d: d.isoformat())  # naive
        | garbage
    ).map(nodes.String),
    "JSON": json_values.map(json_node),
}

GQL_SCHEMA = root_schema._schema


def allowed_fields(role: str) -> list[str]:
    """The root fields ``role`` may call (the authorization matrix's table): operations made
    of these get past the permission checks into resolvers and services."""
    names = []
    for operation, rows in MATRIX.items():
        root = GQL_SCHEMA.query_type if operation == "Query" else GQL_SCHEMA.mutation_type
        for name, row in rows.items():
            cases = row if isinstance(row, list) else [row]
            if root is not None and name in root.fields and cases[0].access.allows(role):
                names.append(name)
    return names


def role_operations(role: str) -> st.SearchStrategy[tuple[str, str]]:
    """Operations for ``role``: mostly over the fields it may call, sometimes over any."""
    reachable = from_schema(
        GQL_SCHEMA, fields=allowed_fields(role), custom_scalars=CUSTOM_SCALARS, allow_x00=False
    )
    anything = from_schema(GQL_SCHEMA, custom_scalars=CUSTOM_SCALARS, allow_x00=False)
    return st.tuples(st.just(role), st.one_of(reachable, reachable, reachable, anything))


operations = st.one_of(*(role_operations(role) for role in ROLES))
invalid_operations = st.tuples(
    st.sampled_from(ROLES),
    from_schema(GQL_SCHEMA, custom_scalars=CUSTOM_SCALARS, allow_x00=False, mode=Mode.NEGATIVE),
)

FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=ON_CI,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
if ON_CI:  # reproducible, and nothing saved between runs
    FUZZ_SETTINGS = settings(FUZZ_SETTINGS, database=None)


async def tokens_and_world(api: GraphQLClient, runtime: Runtime) -> dict[str, str | None]:
    """A member with points, a quest and a catalogue item, so operations find something."""
    await api.register(MEMBER)
    for query, variables in (
        (
            "mutation($i: GrantPointsInput!) { grantPoints(input: $i) { errors { code } } }",
            {"i": {"externalId": MEMBER, "amount": 500, "reason": "seed", "idempotencyKey": "s"}},
        ),
        (
            "mutation($i: UpsertCatalogItemInput!) { upsertCatalogItem(input: $i) {"
            " errors { code } } }",
            {"i": {"key": "a", "name": "A", "cost": 1, "kind": "REWARD", "visible": True}},
        ),
        (
            "mutation($i: UpsertQuestInput!) { upsertQuest(input: $i) { errors { code } } }",
            {
                "i": {
                    "key": "a",
                    "name": "A",
                    "cadence": "DAILY",
                    "eventType": "a",
                    "target": 1,
                    "rewards": [{"kind": "POINTS", "amount": 1}],
                    "aggregate": "COUNT",
                    "autoClaim": True,
                    "active": True,
                }
            },
        ),
    ):
        payload = next(iter((await api.admin(query, variables)).data.values()))
        assert payload["errors"] == [], payload
    async with runtime.transaction() as session:
        events_key = await create_api_key(session, name="fuzz-events", scope="events")
    return {
        "anonymous": None,
        "member": member_token(MEMBER, ttl_seconds=3600),
        "events": events_key,
        "admin": admin_token(ttl_seconds=3600),
    }


# Every fuzz example also checks that no connection was left inside a transaction or a query
# (see test_a_field_error_leaves_no_query_in_flight for the leak this catches).
CHECK_CONNECTION_LEAKS = True


@pytest.fixture(autouse=True)
async def drained_pool(runtime: Runtime) -> AsyncIterator[None]:
    """Close the pooled connections after each test: one left in the middle of a query holds
    its table locks and would block the next test's TRUNCATE (the whole suite would hang)."""
    yield
    await runtime.engine.dispose()


async def open_transactions(database_url: str, settle: float = 3.0) -> list[str]:
    """Sessions on the test database, other than this one, still inside a transaction or a
    statement ``settle`` seconds after a request was answered: a leaked connection (it holds
    its locks, blocking DDL, and is lost to the pool). Work that merely outlives the response
    a little is given that long to finish."""
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        deadline = asyncio.get_running_loop().time() + settle
        while True:
            rows = await conn.fetch(
                "SELECT state, wait_event, left(query, 200) AS query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND xact_start IS NOT NULL"
            )
            if not rows or asyncio.get_running_loop().time() > deadline:
                return [f"{r['state']} ({r['wait_event']}): {r['query']}" for r in rows]
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def send_and_check(
    api: GraphQLClient, runtime: Runtime, token: str | None, query: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await api.http.post("/graphql", json={"query": query}, headers=headers)
    text = response.text
    context = f"\nquery: {query}\nstatus: {response.status_code}\nbody: {text[:2000]}"
    assert response.status_code < 500, context
    assert not LEAK.search(text), "the response leaks a stack trace or a path" + context
    body = json.loads(text)
    assert isinstance(body, dict) and ("data" in body or "errors" in body), context
    for error in body.get("errors") or []:
        message = error.get("message")
        assert isinstance(message, str) and message.strip(), "an error without message" + context
        assert message != MASKED, "an unhandled exception (masked)" + context
    if CHECK_CONNECTION_LEAKS:
        left_open = await open_transactions(runtime.settings.database_url or "")
        assert not left_open, f"transactions left open: {left_open}" + context


# The world is built once per test (hypothesis runs every example inside one test call, so
# the per-test clean-up and ledger verification in conftest wrap the whole pass).
_worlds: dict[int, tuple[GraphQLClient, dict[str, str | None]]] = {}


async def tokens_for(api: GraphQLClient, runtime: Runtime) -> dict[str, str | None]:
    known = _worlds.get(id(api))
    if known is None or known[0] is not api:
        known = (api, await tokens_and_world(api, runtime))
        _worlds.clear()
        _worlds[id(api)] = known
    return known[1]


@pytest.mark.slow
@FUZZ_SETTINGS
@given(call=operations)
async def test_generated_operations_never_break_the_api(
    api: GraphQLClient, runtime: Runtime, call: tuple[str, str]
) -> None:
    role, query = call
    await send_and_check(api, runtime, (await tokens_for(api, runtime))[role], query)


@pytest.mark.slow
@settings(FUZZ_SETTINGS, max_examples=NEGATIVE_EXAMPLES)
@given(call=invalid_operations)
async def test_invalid_operations_get_clear_errors(
    api: GraphQLClient, runtime: Runtime, call: tuple[str, str]
) -> None:
    role, query = call
    await send_and_check(api, runtime, (await tokens_for(api, runtime))[role], query)


async def test_a_field_error_leaves_no_query_in_flight(
    api: GraphQLClient, runtime: Runtime
) -> None:
    """Found by the fuzz pass: ``balance`` (a DataLoader query) and ``redemptions`` with a
    malformed cursor (INVALID_INPUT, non-null, so ``me`` becomes null) in one operation. The
    race is lost about half the time, so the operation is sent up to 20 times."""
    await api.register(MEMBER)
    left_open: list[str] = []
    for _ in range(20):
        result = await api.as_member(
            MEMBER, '{ me { balance redemptions(after: "a") { nodes { cost } } } }'
        )
        assert result.error_codes == ["INVALID_INPUT"]
        left_open = await open_transactions(runtime.settings.database_url or "", settle=0.3)
        if left_open:
            break
    assert left_open == []
