"""Relay-style cursor connections, keyset-paginated and capped at ``MAX_PAGE_SIZE``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import strawberry

from schema.errors import bad_request

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

NodeType = TypeVar("NodeType")
RowType = TypeVar("RowType")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[NodeType]):
    cursor: str
    node: NodeType


@strawberry.type
class Connection(Generic[NodeType]):
    edges: list[Edge[NodeType]]
    page_info: PageInfo

    @strawberry.field(description="The nodes of `edges`, for clients that need no cursors.")
    def nodes(self) -> list[NodeType]:
        return [edge.node for edge in self.edges]


def page_size(first: int | None) -> int:
    if first is None:
        return DEFAULT_PAGE_SIZE
    if first < 0 or first > MAX_PAGE_SIZE:
        raise bad_request(f"`first` must be between 0 and {MAX_PAGE_SIZE}")
    return first


def encode_cursor(kind: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{value}".encode()).decode()


def decode_cursor(kind: str, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        decoded = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad_request("malformed cursor") from None
    prefix, _, value = decoded.partition(":")
    if prefix != kind or not value:
        raise bad_request("malformed cursor")
    return value


def decode_int_cursor(kind: str, cursor: str | None) -> int | None:
    value = decode_cursor(kind, cursor)
    if value is None:
        return None
    if not value.isdigit():
        raise bad_request("malformed cursor")
    return int(value)


def build_connection(
    rows: Sequence[RowType],
    limit: int,
    kind: str,
    cursor_of: Callable[[RowType], str],
    to_node: Callable[[RowType], NodeType],
) -> Connection[NodeType]:
    """``rows`` were fetched with ``limit + 1``: the extra row only says there is a next page."""
    page = rows[:limit]
    edges = [Edge(cursor=encode_cursor(kind, cursor_of(row)), node=to_node(row)) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > limit, end_cursor=edges[-1].cursor if edges else None
        ),
    )
