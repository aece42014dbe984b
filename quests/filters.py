"""Declarative event filters: property conditions combined with AND.

A filter is a JSON object; each key names an event property and maps to either a plain value
(equality) or an object of operators::

    {"category": "coffee", "amount": {"gte": 10}, "store": {"in": ["north", "south"]}}

Operators: ``eq``, ``in`` (a list of values), ``gt``, ``gte``, ``lt``, ``lte`` (numbers).
Filters are validated when a quest is saved and evaluated as data, never executed as code.
A condition on a missing property, or a comparison with a value of another type, is false.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from server.errors import invalid

PROPERTY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
NUMERIC_OPERATORS = {"gt", "gte", "lt", "lte"}
OPERATORS = NUMERIC_OPERATORS | {"eq", "in"}
MAX_CONDITIONS = 20
MAX_IN_VALUES = 100
Scalar = str | int | float | bool


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and value is not None


def validate_filter(raw: object, field: str = "filter") -> dict[str, Any]:
    """Return the filter if valid; raise ``INVALID_INPUT`` naming what is wrong."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise invalid("filter must be an object of property conditions", field)
    if len(raw) > MAX_CONDITIONS:
        raise invalid(f"a filter has at most {MAX_CONDITIONS} conditions", field)
    for name, condition in raw.items():
        if not isinstance(name, str) or not PROPERTY_PATTERN.match(name):
            raise invalid(f"bad property name {name!r} (letters, digits and _)", field)
        if isinstance(condition, Mapping):
            if not condition:
                raise invalid(f"{name}: empty condition", field)
            for operator, value in condition.items():
                _validate_operator(name, operator, value, field)
        elif not _is_scalar(condition):
            raise invalid(f"{name}: expected a string, number, boolean or operators", field)
    return {name: dict(c) if isinstance(c, Mapping) else c for name, c in raw.items()}


def _validate_operator(name: str, operator: object, value: object, field: str) -> None:
    if operator not in OPERATORS:
        raise invalid(
            f"{name}: unknown operator {operator!r} (use {', '.join(sorted(OPERATORS))})", field
        )
    if operator in NUMERIC_OPERATORS and not _is_number(value):
        raise invalid(f"{name}.{operator} needs a number", field)
    if operator == "eq" and not _is_scalar(value):
        raise invalid(f"{name}.eq needs a string, number or boolean", field)
    if operator == "in" and (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_IN_VALUES
        or not all(_is_scalar(v) for v in value)
    ):
        raise invalid(f"{name}.in needs a list of 1 to {MAX_IN_VALUES} plain values", field)


def _equal(actual: object, expected: object) -> bool:
    if _is_number(actual) and _is_number(expected):
        return actual == expected
    return type(actual) is type(expected) and actual == expected


def _check(actual: object, operator: str, expected: Any) -> bool:
    if operator == "eq":
        return _equal(actual, expected)
    if operator == "in":
        return any(_equal(actual, option) for option in expected)
    if not _is_number(actual):
        return False
    number: float = actual  # type: ignore[assignment]
    if operator == "gt":
        return number > expected
    if operator == "gte":
        return number >= expected
    if operator == "lt":
        return number < expected
    return number <= expected  # lte


def matches(event_filter: Mapping[str, Any], properties: Mapping[str, Any]) -> bool:
    """Whether the properties meet a filter ``validate_filter`` returned (its operator
    objects are dicts: a plain type check, not an ABC's, on every event and quest)."""
    for name, condition in event_filter.items():
        if name not in properties:
            return False
        actual = properties[name]
        if isinstance(condition, dict):
            if not all(_check(actual, op, value) for op, value in condition.items()):
                return False
        elif not _equal(actual, condition):
            return False
    return True
