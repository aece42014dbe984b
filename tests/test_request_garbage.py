"""A request leaves no reference cycles behind: its objects are freed by reference counting
when it ends, not by the cyclic garbage collector (which took about a tenth of an API
process's CPU under load while every request's objects ended up in cycles)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from server.runtime import Runtime
from tests.api import GraphQLClient

ME = """{ me { externalId tier { key } tierProgress { xpNeeded } balance
  xp: balance(currency: "xp") } }"""


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects the collector finds unreachable (kept for inspection) after the block."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def server_side(objects: list[object]) -> list[str]:
    """What of ``objects`` the server made: not the test client's (httpx keeps a cycle of its
    own between a response and its stream), not plain containers."""
    names = (f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    return sorted(
        n for n in names if n.split(".")[0] in ("schema", "server", "graphql", "strawberry",
                                                "starlette", "members", "ledger")
    )  # fmt: skip


async def test_a_member_view_leaves_no_cycles(api: GraphQLClient) -> None:
    await api.register("tidy")
    await api.as_member("tidy", ME)  # caches and loaders warmed
    with cyclic_garbage() as garbage:
        for _ in range(3):
            answer = await api.as_member("tidy", ME)
            assert answer.errors == []
    assert server_side(garbage) == []


async def test_an_event_leaves_no_cycles(api: GraphQLClient) -> None:
    from tests.quests.helpers import record, upsert_quest

    await api.register("tidy")
    await upsert_quest(api, key="two-taps", cadence="DAILY", eventType="tap", target=2)
    await record(api, "tidy", "tap", "t0")
    with cyclic_garbage() as garbage:
        assert (await record(api, "tidy", "tap", "t1"))["errors"] == []
    assert server_side(garbage) == []


async def test_a_redemption_leaves_no_cycles(api: GraphQLClient, runtime: Runtime) -> None:
    from tests.redemptions.test_api import member_with_points, redeem, upsert

    await member_with_points(api, runtime, "tidy", 1000)
    await upsert(api, key="mug", cost=100, stock=10)
    assert (await redeem(api, "tidy", "mug", "r0"))["errors"] == []
    with cyclic_garbage() as garbage:
        assert (await redeem(api, "tidy", "mug", "r1"))["errors"] == []
    assert server_side(garbage) == []
