"""Event filters evaluated as data: every operator, type mismatches and missing properties
(``quests.filters``), and what ``validate_filter`` keeps."""

from __future__ import annotations

from typing import Any

import pytest

from quests.filters import matches, validate_filter
from server.errors import DomainError

CASES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    # plain values: equality, numbers compared as numbers, other types never equal
    ({"category": "coffee"}, {"category": "coffee"}, True),
    ({"category": "coffee"}, {"category": "tea"}, False),
    ({"amount": 10}, {"amount": 10.0}, True),
    ({"amount": 10}, {"amount": "10"}, False),
    ({"vip": True}, {"vip": True}, True),
    ({"vip": True}, {"vip": 1}, False),
    ({"count": 1}, {"count": True}, False),  # a boolean is not a number
    # operators
    ({"amount": {"gt": 10}}, {"amount": 10}, False),
    ({"amount": {"gt": 10}}, {"amount": 10.5}, True),
    ({"amount": {"gte": 10}}, {"amount": 10}, True),
    ({"amount": {"lt": 10}}, {"amount": 9}, True),
    ({"amount": {"lt": 10}}, {"amount": 10}, False),
    ({"amount": {"lte": 10}}, {"amount": 10}, True),
    ({"amount": {"gte": 10, "lt": 20}}, {"amount": 15}, True),  # operators combine with AND
    ({"amount": {"gte": 10, "lt": 20}}, {"amount": 20}, False),
    ({"amount": {"gte": 10}}, {"amount": "15"}, False),  # a string is not compared as a number
    ({"amount": {"gte": 10}}, {"amount": False}, False),
    ({"amount": {"eq": 3}}, {"amount": 3.0}, True),
    ({"store": {"in": ["north", "south"]}}, {"store": "south"}, True),
    ({"store": {"in": ["north", "south"]}}, {"store": "east"}, False),
    ({"size": {"in": [1, 2]}}, {"size": 2.0}, True),
    ({"size": {"in": [1, 2]}}, {"size": "2"}, False),
    # every condition must hold; a missing property fails its condition
    ({"category": "coffee", "amount": {"gte": 5}}, {"category": "coffee", "amount": 4}, False),
    ({"category": "coffee", "amount": {"gte": 5}}, {"category": "coffee", "amount": 5}, True),
    ({"amount": {"gte": 0}}, {}, False),
    ({}, {"anything": 1}, True),
]


@pytest.mark.parametrize(("event_filter", "properties", "expected"), CASES)
def test_matches(event_filter: dict[str, Any], properties: dict[str, Any], expected: bool) -> None:
    assert matches(validate_filter(event_filter), properties) is expected


def test_validate_filter_keeps_plain_dicts() -> None:
    from types import MappingProxyType

    raw = MappingProxyType({"amount": MappingProxyType({"gte": 1}), "store": "north"})
    kept = validate_filter(raw)
    assert kept == {"amount": {"gte": 1}, "store": "north"}
    assert type(kept) is dict and type(kept["amount"]) is dict
    assert validate_filter(None) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"amount": {"gte": True}},  # a boolean is not a number
        {"amount": {"in": []}},
        {"amount": {"in": [[1]]}},
        {"amount": {"eq": {"nested": 1}}},
        {"amount": {}},
        {"amount": None},
        {"1st": 1},
        {f"p{i}": i for i in range(21)},  # more than 20 conditions
    ],
)
def test_validate_filter_refuses(bad: dict[str, Any]) -> None:
    with pytest.raises(DomainError) as refused:
        validate_filter(bad)
    assert refused.value.field == "filter"
