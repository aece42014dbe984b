"""The authorization matrix: every query and mutation of the schema, called by every kind of
caller, answers or refuses as API.md's Identity section says, and a refusal changes nothing.

Callers: ``anonymous`` (no token), ``member`` (alice's own token), ``other_member`` (bob's
token, acting on alice's things), ``events`` (an ``events``-scope API key) and ``admin``.

The fields come from the live schema, so a field added later without a row in ``MATRIX`` fails
``test_every_root_field_is_classified`` with a message saying what to add. Each row names an
access rule (who may call it) and the arguments of one call; arguments that refer to things
(alice's redemption, a transaction) are filled in from a small world built through the API.

"Answers": no GraphQL error at all (a payload may still carry domain ``errors``, such as
``ALREADY_DONE`` on a second check-in). "Refuses": exactly one GraphQL error, with
``extensions.code`` ``UNAUTHENTICATED`` for an anonymous caller and ``FORBIDDEN`` for a caller
who is known but not allowed, no data for the field, and every table of the database exactly
as it was before the call (compared by a digest of each table's rows).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import asyncpg
import graphql
import pytest

from schema.root import schema as root_schema
from server.auth import create_api_key
from server.runtime import Runtime
from tests.api import GraphQLClient, Result, admin_token, member_token
from tests.support import plain_dsn

ROLES = ("anonymous", "member", "other_member", "events", "admin")
ALICE, BOB = "authz-alice", "authz-bob"


class Access(Enum):
    """Who may call a field. ``member`` is the target member's own token, ``other_member``
    another member's token; for fields that take no target both are just "a member"."""

    PUBLIC = "everyone, no token needed"
    AUTHENTICATED = "any token"
    ADMIN = "admin only"
    STAFF = "admin or an events key"
    SELF_OR_STAFF = "admin, events key, or the target member's own token"
    MEMBER = "a member token (acting on its own member)"
    SELF_OR_ADMIN = "admin, or the member who owns the target"

    def allows(self, role: str) -> bool:
        return role in _ALLOWED[self]


_ALLOWED: dict[Access, frozenset[str]] = {
    Access.PUBLIC: frozenset(ROLES),
    Access.AUTHENTICATED: frozenset(ROLES) - {"anonymous"},
    Access.ADMIN: frozenset({"admin"}),
    Access.STAFF: frozenset({"events", "admin"}),
    Access.SELF_OR_STAFF: frozenset({"member", "events", "admin"}),
    Access.MEMBER: frozenset({"member", "other_member"}),
    Access.SELF_OR_ADMIN: frozenset({"member", "admin"}),
}


@dataclass
class World:
    """What the calls refer to, made through the API before the matrix runs."""

    transaction_id: str
    redemption_id: str
    serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def key(self, prefix: str = "authz") -> str:
        return f"{prefix}-{next(self.serial)}"


Args = Callable[[World], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    access: Access
    args: Args = lambda world: {}
    note: str = ""
    # The code an anonymous caller is refused with, where it is not UNAUTHENTICATED: an
    # admin-only *argument* of a public field is FORBIDDEN to everyone but admins, with or
    # without a token (API.md allows either code; the field itself stays public).
    anonymous_refusal: str = "UNAUTHENTICATED"


def soon(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


# One row per root field. Rows with a list hold several calls (an argument that changes who may
# call, such as ``includeSecret``). Keep in step with API.md's Identity section. A row for a
# field the schema does not have (yet) is skipped, so a field can be classified before it lands.
MATRIX: dict[str, dict[str, Case | list[Case]]] = {
    "Query": {
        "me": Case(Access.MEMBER),
        "member": Case(Access.SELF_OR_STAFF, lambda w: {"externalId": ALICE}),
        "members": Case(Access.ADMIN, lambda w: {"first": 5}),
        "transaction": Case(Access.ADMIN, lambda w: {"id": w.transaction_id}),
        "ledgerSummary": Case(Access.ADMIN, lambda w: {"currency": "points"}),
        "tiers": Case(Access.PUBLIC),
        "program": Case(Access.ADMIN),
        "quests": Case(Access.PUBLIC),
        "badges": [
            Case(Access.PUBLIC, lambda w: {"includeSecret": False}),
            Case(Access.ADMIN, lambda w: {"includeSecret": True}, anonymous_refusal="FORBIDDEN"),
        ],
        "titles": Case(Access.ADMIN),
        "campaigns": Case(Access.ADMIN),
        "catalog": [
            Case(Access.PUBLIC, lambda w: {"first": 5}),
            Case(
                Access.ADMIN,
                lambda w: {"first": 5, "includeUnavailable": True},
                anonymous_refusal="FORBIDDEN",
            ),
        ],
        "catalogItem": Case(Access.PUBLIC, lambda w: {"key": "authz-reward"}),
        "lotteryDraw": Case(
            Access.PUBLIC, lambda w: {"itemKey": "authz-lottery"}, "public: the audit trail"
        ),
        "redemptions": Case(Access.ADMIN, lambda w: {"first": 5}),
        "redemption": Case(Access.SELF_OR_ADMIN, lambda w: {"id": w.redemption_id}),
        "leaderboard": Case(Access.PUBLIC, lambda w: {"key": "authz-board", "first": 5}),
        "leaderboards": Case(Access.PUBLIC),
        "webhooks": Case(Access.ADMIN),
        "webhookEventTypes": Case(
            Access.PUBLIC, note="the names of the event types: documentation, no data"
        ),
        "webhookDeliveries": Case(Access.ADMIN, lambda w: {"first": 5}),
    },
    "Mutation": {
        "setMemberStatus": Case(
            Access.ADMIN, lambda w: {"input": {"externalId": ALICE, "status": "ACTIVE"}}
        ),
        "registerMember": Case(Access.SELF_OR_STAFF, lambda w: {"input": {"externalId": ALICE}}),
        "grantPoints": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "externalId": ALICE,
                    "amount": 5,
                    "reason": "authz",
                    "idempotencyKey": w.key(),
                }
            },
        ),
        "deductPoints": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "externalId": ALICE,
                    "amount": 1,
                    "reason": "authz",
                    "idempotencyKey": w.key(),
                }
            },
        ),
        "reverseTransaction": Case(
            Access.ADMIN,
            lambda w: {"input": {"transactionId": w.transaction_id, "reason": "authz"}},
        ),
        "settleExpirations": Case(Access.ADMIN, lambda w: {"input": {}}),
        "configureProgram": Case(Access.ADMIN, lambda w: {"input": {"welcomePoints": 0}}),
        "upsertTier": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "key": "authz-gold",
                    "name": "Gold",
                    "rank": 2,
                    "xpThreshold": 1000,
                    "pointsMultiplier": 1.5,
                }
            },
        ),
        "upsertQuest": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "key": "authz-quest-2",
                    "name": "Another quest",
                    "cadence": "DAILY",
                    "eventType": "review",
                    "target": 2,
                    "rewards": [{"kind": "POINTS", "amount": 5}],
                    "aggregate": "COUNT",
                    "autoClaim": True,
                    "active": True,
                }
            },
        ),
        "recordEvent": Case(
            Access.STAFF,
            lambda w: {
                "input": {
                    "externalId": ALICE,
                    "type": "purchase",
                    "properties": {"amount": 3},
                    "idempotencyKey": w.key(),
                }
            },
        ),
        "checkIn": Case(Access.MEMBER, lambda w: {"input": {"idempotencyKey": w.key()}}),
        "claimQuestReward": Case(Access.MEMBER, lambda w: {"input": {"questKey": "authz-quest"}}),
        "configureCheckInRewards": Case(
            Access.ADMIN,
            lambda w: {"input": {"rewards": [{"day": 1, "points": 1, "xp": 1}]}},
        ),
        "upsertBadge": Case(
            Access.ADMIN,
            lambda w: {
                "input": {"key": "authz-badge", "name": "Badge", "levels": 1, "secret": False}
            },
        ),
        "awardBadge": Case(
            Access.ADMIN,
            lambda w: {"input": {"externalId": ALICE, "badgeKey": "authz-badge", "level": 1}},
        ),
        "upsertTitle": Case(
            Access.ADMIN, lambda w: {"input": {"key": "authz-title", "name": "Title"}}
        ),
        "grantTitle": Case(
            Access.ADMIN, lambda w: {"input": {"externalId": ALICE, "titleKey": "authz-title"}}
        ),
        "revokeTitle": Case(
            Access.ADMIN, lambda w: {"input": {"externalId": ALICE, "titleKey": "authz-title"}}
        ),
        "equipTitle": Case(Access.MEMBER, lambda w: {"input": {"titleKey": None}}),
        "upsertCampaign": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "key": "authz-campaign",
                    "name": "Double",
                    "multiplier": 2.0,
                    "startsAt": soon(10),
                    "endsAt": soon(12),
                }
            },
        ),
        "upsertCatalogItem": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "key": "authz-reward-2",
                    "name": "Another reward",
                    "cost": 10,
                    "kind": "REWARD",
                    "visible": True,
                }
            },
        ),
        "redeem": Case(
            Access.MEMBER,
            lambda w: {
                "input": {"itemKey": "authz-reward", "quantity": 1, "idempotencyKey": w.key()}
            },
        ),
        "cancelRedemption": Case(
            Access.SELF_OR_ADMIN,
            lambda w: {"input": {"redemptionId": w.redemption_id, "reason": "authz"}},
        ),
        "fulfillRedemption": Case(
            Access.ADMIN, lambda w: {"input": {"redemptionId": w.redemption_id}}
        ),
        "upsertLeaderboard": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "key": "authz-board-2",
                    "name": "Weekly",
                    "metric": "XP_EARNED",
                    "period": "WEEKLY",
                    "active": True,
                }
            },
        ),
        "upsertWebhook": Case(
            Access.ADMIN,
            lambda w: {
                "input": {
                    "url": "http://127.0.0.1:9/authz",
                    "events": ["member.registered"],
                    "secret": "authz-secret-0123456789",
                }
            },
        ),
        "retryWebhookDelivery": Case(Access.ADMIN, lambda w: {"input": {"deliveryId": "1"}}),
        "drawLottery": Case(
            Access.ADMIN, lambda w: {"input": {"itemKey": "authz-lottery", "winners": 1}}
        ),
    },
}

# Order of the calls for one case: refusals first, so an allowed call (which may change the
# world, e.g. cancel the redemption) never turns a later refusal into a domain error.
CALL_ORDER = ("anonymous", "other_member", "events", "member", "admin")


def root_fields() -> dict[str, dict[str, graphql.GraphQLField]]:
    gql = root_schema._schema
    found: dict[str, dict[str, graphql.GraphQLField]] = {}
    for operation in ("Query", "Mutation"):
        root = gql.get_type(operation)
        assert isinstance(root, graphql.GraphQLObjectType)
        found[operation] = dict(root.fields)
    return found


def document(
    operation: str, name: str, gql_field: graphql.GraphQLField, args: Mapping[str, Any]
) -> str:
    """``query($a: T!) { name(a: $a) { __typename } }`` for the arguments given."""
    unknown = set(args) - set(gql_field.args)
    assert not unknown, f"{operation}.{name} has no argument(s) {unknown}"
    variables = ", ".join(f"${a}: {gql_field.args[a].type}" for a in args)
    passed = ", ".join(f"{a}: ${a}" for a in args)
    selection = ""
    named = graphql.get_named_type(gql_field.type)
    if isinstance(named, graphql.GraphQLObjectType):
        selection = (
            "{ __typename" + (" errors { code message }" if "errors" in named.fields else "") + " }"
        )
    elif isinstance(named, (graphql.GraphQLInterfaceType, graphql.GraphQLUnionType)):
        selection = "{ __typename }"
    keyword = "query" if operation == "Query" else "mutation"
    head = f"{keyword} Authz({variables})" if variables else f"{keyword} Authz"
    call = f"{name}({passed})" if passed else name
    return f"{head} {{ {call} {selection} }}"


def test_every_root_field_is_classified() -> None:
    """A new query or mutation must get a row in MATRIX (with its access rule) to be covered."""
    missing = [
        f"{operation}.{name}"
        for operation, fields in root_fields().items()
        for name in fields
        if name not in MATRIX[operation]
    ]
    assert not missing, (
        f"add these fields to MATRIX in {__file__} with the access rule API.md gives them: "
        + ", ".join(missing)
    )


async def database_digest(database_url: str) -> dict[str, str]:
    """Per table: row count and an md5 over its rows (text form, sorted)."""
    conn = await asyncpg.connect(plain_dsn(database_url))
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        sql = " UNION ALL ".join(
            f"SELECT '{t}' AS t, count(*)::text || ':' || "
            f"coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS d FROM \"{t}\" x"
            for t in tables
        )
        return {r["t"]: r["d"] for r in await conn.fetch(sql)}
    finally:
        await conn.close()


UPSERT_ITEM = """mutation($i: UpsertCatalogItemInput!) {
  upsertCatalogItem(input: $i) { errors { code } } }"""


async def build_world(api: GraphQLClient, runtime: Runtime) -> tuple[World, dict[str, str | None]]:
    await api.register(ALICE)
    await api.register(BOB)
    granted = await api.admin(
        """mutation($input: GrantPointsInput!) { grantPoints(input: $input) {
             transaction { id } errors { code } } }""",
        {
            "input": {
                "externalId": ALICE,
                "amount": 1000,
                "reason": "seed",
                "idempotencyKey": "seed-1",
            }
        },
    )
    transaction_id = granted.data["grantPoints"]["transaction"]["id"]
    for query, variables in (
        (
            UPSERT_ITEM,
            {
                "i": {
                    "key": "authz-reward",
                    "name": "Reward",
                    "cost": 10,
                    "kind": "REWARD",
                    "visible": True,
                }
            },
        ),
        (
            UPSERT_ITEM,
            {
                "i": {
                    "key": "authz-lottery",
                    "name": "Lottery",
                    "cost": 1,
                    "kind": "LOTTERY",
                    "visible": True,
                }
            },
        ),
        (
            "mutation($i: UpsertQuestInput!) { upsertQuest(input: $i) { errors { code } } }",
            {
                "i": {
                    "key": "authz-quest",
                    "name": "Buy once",
                    "cadence": "ONCE",
                    "eventType": "purchase",
                    "target": 1,
                    "rewards": [{"kind": "POINTS", "amount": 5}],
                    "aggregate": "COUNT",
                    "autoClaim": False,
                    "active": True,
                }
            },
        ),
        (
            "mutation($i: UpsertTitleInput!) { upsertTitle(input: $i) { errors { code } } }",
            {"i": {"key": "authz-title", "name": "Title"}},
        ),
    ):
        result = await api.admin(query, variables)
        payload = next(iter(result.data.values()))
        assert payload["errors"] == [], (query, payload)
    if "upsertLeaderboard" in root_fields()["Mutation"]:
        board = await api.admin(
            """mutation($i: UpsertLeaderboardInput!) { upsertLeaderboard(input: $i) {
                 errors { code } } }""",
            {
                "i": {
                    "key": "authz-board",
                    "name": "Points",
                    "metric": "POINTS_EARNED",
                    "period": "ALL_TIME",
                    "active": True,
                }
            },
        )
        assert board.data["upsertLeaderboard"]["errors"] == [], board.body
    redeemed = await api.as_member(
        ALICE,
        """mutation($input: RedeemInput!) { redeem(input: $input) {
             redemption { id status } errors { code } } }""",
        {"input": {"itemKey": "authz-reward", "quantity": 1, "idempotencyKey": "seed-redeem"}},
    )
    redemption = redeemed.data["redeem"]["redemption"]
    assert redemption["status"] == "PENDING", redeemed.body
    async with runtime.transaction() as session:
        events_key = await create_api_key(session, name="authz-events", scope="events")
    tokens: dict[str, str | None] = {
        "anonymous": None,
        "member": member_token(ALICE),
        "other_member": member_token(BOB),
        "events": events_key,
        "admin": admin_token(),
    }
    return World(transaction_id=transaction_id, redemption_id=redemption["id"]), tokens


def outcome(result: Result, name: str) -> str:
    codes = result.error_codes
    if not codes:
        return "answers"
    if len(codes) == 1 and codes[0] in ("UNAUTHENTICATED", "FORBIDDEN"):
        return str(codes[0])
    return f"other errors: {result.errors}"


def expected(case: Case, role: str) -> str:
    if case.access.allows(role):
        return "answers"
    return case.anonymous_refusal if role == "anonymous" else "FORBIDDEN"


@pytest.mark.slow
async def test_every_field_answers_or_refuses_as_api_md_says(
    api: GraphQLClient, runtime: Runtime, database_url: str
) -> None:
    world, tokens = await build_world(api, runtime)
    fields = root_fields()
    mismatches: list[str] = []
    calls = 0
    for operation, rows in MATRIX.items():
        for name, row in rows.items():
            if name not in fields[operation]:
                continue
            for case in row if isinstance(row, list) else [row]:
                for role in CALL_ORDER:
                    args = case.args(world)
                    query = document(operation, name, fields[operation][name], args)
                    want = expected(case, role)
                    before = await database_digest(database_url) if want != "answers" else None
                    result = await api.post(query, args, tokens[role])
                    calls += 1
                    assert result.status == 200, (operation, name, role, result.body)
                    got = outcome(result, name)
                    where = f"{operation}.{name}({args}) as {role}: expected {want}, got {got}"
                    if got != want:
                        mismatches.append(where)
                        continue
                    if before is not None:
                        data = result.body.get("data")
                        assert data is None or data.get(name) is None, where
                        after = await database_digest(database_url)
                        changed = {t for t in before if before[t] != after.get(t)}
                        assert not changed, f"{where}: the refusal changed {sorted(changed)}"
    assert not mismatches, "\n".join(mismatches)
    classified = sum(
        len(row) if isinstance(row, list) else 1
        for operation, rows in MATRIX.items()
        for name, row in rows.items()
        if name in fields[operation]
    )
    assert calls == len(ROLES) * classified
