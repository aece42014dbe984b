"""Signals reach subscribers only after the transaction commits, batched per topic."""

from __future__ import annotations

import pytest

from ledger import service as ledger
from members.service import register_member
from server import signals
from server.runtime import Runtime


async def test_delivered_after_commit_only(runtime: Runtime) -> None:
    received: list[list[signals.Signal]] = []

    async def handler(batch: list[signals.Signal]) -> None:
        received.append(batch)

    signals.subscribe("points.credited", handler)
    try:
        await _scenario(runtime, received)
    finally:
        signals.unsubscribe("points.credited", handler)


async def _scenario(runtime: Runtime, received: list[list[signals.Signal]]) -> None:
    async with runtime.transaction() as session:
        member = (await register_member(session, external_id="sig")).member
        await ledger.grant(session, member.id, 5, idempotency_key="s1")
        await ledger.grant(session, member.id, 7, idempotency_key="s2")
        assert received == []  # nothing before the commit
    assert [[s.payload["amount"] for s in batch] for batch in received] == [[5, 7]]

    with pytest.raises(RuntimeError):
        async with runtime.transaction() as session:
            await ledger.grant(session, member.id, 9, idempotency_key="s3")
            raise RuntimeError("roll back")
    async with runtime.transaction() as session:
        await ledger.grant(session, member.id, 5, idempotency_key="s1")  # a replay
    assert len(received) == 1  # neither the rolled-back grant nor the replay was announced


async def test_autocommit_work_delivers_after_its_statement(runtime: Runtime) -> None:
    received: list[list[signals.Signal]] = []

    async def handler(batch: list[signals.Signal]) -> None:
        received.append(batch)

    signals.subscribe("probe.done", handler)
    try:
        async with runtime.autocommit() as unit:
            await unit.connection.execute("SELECT 1")
            signals.emit(unit, "probe.done", n=1)
            assert received == []  # not before the work has returned
        assert [[s.payload["n"] for s in batch] for batch in received] == [[1]]
        with pytest.raises(RuntimeError):
            async with runtime.autocommit() as unit:
                signals.emit(unit, "probe.done", n=2)
                raise RuntimeError("failed")
        assert len(received) == 1  # work that failed announces nothing
    finally:
        signals.unsubscribe("probe.done", handler)


async def test_durable_topics_follow_each_writers_interest(runtime: Runtime) -> None:
    wanted: set[str] = set()

    def writer(session: object, batch: list[signals.Signal]) -> None:
        pass

    async def interest(connection: object) -> frozenset[str]:
        return frozenset(wanted)

    signals.persist(["probe.a", "probe.b"], writer, interest)
    try:
        async with runtime.autocommit() as unit:
            assert not {"probe.a", "probe.b"} & await signals.durable_topics(unit.connection)
            wanted.update({"probe.b", "probe.other"})  # only its own topics count
            topics = await signals.durable_topics(unit.connection)
            assert "probe.b" in topics and not {"probe.a", "probe.other"} & topics
    finally:
        signals.stop_persisting(writer)
