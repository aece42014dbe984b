"""Query cost limits: every field costs 1, a paginated field multiplies its selection by
`first` (literal, variable or default), aliases and fragment spreads each count; over the
limit is a GraphQL error (QUERY_TOO_COSTLY), never a 500, and nothing runs."""

from __future__ import annotations

import time
from typing import Any

from graphql import OperationDefinitionNode, parse

from schema.cost import CostCalculator
from schema.pagination import DEFAULT_PAGE_SIZE
from schema.root import build_schema
from server.settings import get_settings
from tests.api import GraphQLClient

HISTORY = "history(first: $h) { edges { node { amount } } }"


def cost(query: str, variables: dict[str, Any] | None = None) -> int:
    schema = build_schema()._schema
    document = parse(query)
    calculator = CostCalculator(schema, document, variables)
    (operation,) = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    return calculator.operation_cost(operation)


def members_query(first: int, history: int, alias: str = "") -> str:
    prefix = f"{alias}: " if alias else ""
    return (
        f"{prefix}members(first: {first}) {{ edges {{ node {{ "
        f"history(first: {history}) {{ edges {{ node {{ amount }} }} }} }} }} }}"
    )


def test_fields_cost_one_and_pages_multiply() -> None:
    assert cost("{ tiers { key name } }") == 3  # a plain list counts once
    assert cost("{ members(first: 10) { edges { node { id } } } }") == 1 + 10 * 3
    assert cost(f"{{ {members_query(10, 10)} }}") == 1 + 10 * (1 + 1 + 1 + 10 * 3)
    assert cost("{ members { edges { node { id } } } }") == 1 + DEFAULT_PAGE_SIZE * 3
    # a schema default (leaderboard's first = 10) is the page when none is given
    assert cost('{ leaderboard(key: "x") { entries { rank } } }') == 1 + 10 * 2
    assert cost("{ members(first: -5) { edges { node { id } } } }") == 1  # nothing asked
    # above the maximum page the field refuses by itself: counted as the maximum
    assert cost("{ members(first: 1000) { edges { node { id } } } }") == 1 + 100 * 3
    assert cost("{ __typename }") == 1


def test_aliases_and_fragments_each_count() -> None:
    one = cost(f"{{ {members_query(10, 10)} }}")
    aliased = " ".join(members_query(10, 10, f"a{n}") for n in range(5))
    assert cost(f"{{ {aliased} }}") == 5 * one
    with_fragment = """
        query { members(first: 10) { edges { node { ...M ...M } } } }
        fragment M on Member { id externalId }
    """
    assert cost(with_fragment) == 1 + 10 * (1 + 1 + 4)
    inline = "{ members(first: 2) { edges { node { ... on Member { id } } } } }"
    assert cost(inline) == 1 + 2 * 3


def test_variables_and_their_defaults() -> None:
    query = (
        "query($n: Int, $h: Int = 7) "
        f"{{ members(first: $n) {{ edges {{ node {{ {HISTORY} }} }} }} }}"
    )
    per_member = 1 + 1 + 1 + 7 * 3
    assert cost(query) == 1 + DEFAULT_PAGE_SIZE * per_member  # $n unknown while validating
    assert cost(query, {"n": 3}) == 1 + 3 * per_member
    assert cost(query, {"n": 3, "h": 100}) == 1 + 3 * (3 + 100 * 3)
    assert cost(query, {"n": None}) == 1 + DEFAULT_PAGE_SIZE * per_member


def test_fragments_are_walked_once() -> None:
    """Fragments spreading fragments twice each would be 2^40 walks without memoising."""
    fragments = "\n".join(
        f"fragment F{n} on Member {{ ...F{n + 1} ...F{n + 1} }}" for n in range(40)
    )
    query = f"{{ members(first: 1) {{ edges {{ node {{ ...F0 }} }} }} }}\n{fragments}\n" + (
        "fragment F40 on Member { id }"
    )
    started = time.monotonic()
    assert cost(query) == 1 + 1 + 1 + 2**40
    assert time.monotonic() - started < 1
    cyclic = "{ members { edges { node { ...A } } } } fragment A on Member { id ...A }"
    cost(cyclic)  # no recursion error: another rule rejects the cycle


async def test_over_the_limit_is_refused_before_anything_runs(api: GraphQLClient) -> None:
    limit = get_settings().max_query_cost
    await api.register("costly")
    fine = await api.admin(f"{{ {members_query(10, 10)} }}")
    assert fine.status == 200 and fine.data["members"]["edges"]

    result = await api.admin(f"{{ {members_query(100, 100)} }}")
    assert result.status == 200
    assert result.body.get("data") is None
    (error,) = result.errors
    assert error["extensions"]["code"] == "QUERY_TOO_COSTLY"
    assert error["extensions"]["cost"] == 30301 and error["extensions"]["maxCost"] == limit
    assert "too costly" in error["message"] and str(limit) in error["message"]


async def test_aliases_add_up_to_the_limit(api: GraphQLClient) -> None:
    one = cost(f"{{ {members_query(10, 10)} }}")
    fits = get_settings().max_query_cost // one  # 15 of them (cost 331 each)
    under = " ".join(members_query(10, 10, f"a{n}") for n in range(fits))
    over = " ".join(members_query(10, 10, f"a{n}") for n in range(fits + 1))
    assert (await api.admin(f"{{ {under} }}")).errors == []
    assert (await api.admin(f"{{ {over} }}")).error_codes == ["QUERY_TOO_COSTLY"]


async def test_page_sizes_from_variables_are_counted(api: GraphQLClient) -> None:
    query = (
        f"query($n: Int, $h: Int) {{ members(first: $n) {{ edges {{ node {{ {HISTORY} }} }} }} }}"
    )
    assert (await api.admin(query, {"n": 5, "h": 5})).errors == []
    refused = await api.admin(query, {"n": 100, "h": 100})
    assert refused.status == 200 and refused.error_codes == ["QUERY_TOO_COSTLY"]
    assert refused.errors[0]["extensions"]["cost"] == 30301
    # the same text again, now with small pages: the plan is cached, the values are not
    assert (await api.admin(query, {"n": 2, "h": 3})).errors == []


async def test_malformed_input_is_a_graphql_error_not_a_500(api: GraphQLClient) -> None:
    for query, variables in (
        ('{ members(first: "ten") { edges { node { id } } } }', None),
        ("query($n: Int) { members(first: $n) { edges { node { id } } } }", {"n": "x"}),
        ("{ members(first: 10) { edges { node { nope } } } }", None),
        ("{ members(first: 99999999999) { edges { node { id } } } }", None),
        ("fragment A on Member { ...A } { members { edges { node { ...A } } } }", None),
    ):
        result = await api.admin(query, variables)
        assert result.status in (200, 400), (query, result.body)
        assert result.errors, query


async def test_the_parse_and_validation_caches_still_hit(api: GraphQLClient) -> None:
    from schema.extensions import _parse, _validate

    query = "{ tiers { key } }"
    await api.post(query)
    before = (_parse.cache_info(), _validate.cache_info())
    await api.post(query)
    for cache, was in zip((_parse, _validate), before, strict=True):
        now = cache.cache_info()
        assert now.hits == was.hits + 1 and now.misses == was.misses


async def test_graphiql_introspection_is_affordable(api: GraphQLClient) -> None:
    from graphql import get_introspection_query

    result = await api.post(get_introspection_query())
    assert result.errors == [] and result.data["__schema"]["types"]
