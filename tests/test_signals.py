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
