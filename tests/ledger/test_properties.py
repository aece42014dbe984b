"""Property: any sequence of ledger operations leaves every invariant intact and conserves
value (issued = outstanding + spent + expired, per currency)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import service
from ledger.errors import LedgerError
from ledger.tasks import run_settle_expirations, run_vest_pending
from ledger.verify import verify_session
from server.runtime import Runtime
from tests.ledger.conftest import advance_clock, create_members

MEMBERS = 3
member = st.integers(0, MEMBERS - 1)
amount = st.integers(1, 60)
pick = st.integers(0, 10_000)  # an index into what exists so far, modulo its length

operations = st.one_of(
    st.tuples(st.just("grant"), member, amount, st.sampled_from([None, 1, 5, 30])),
    st.tuples(st.just("grant_xp"), member, amount),
    st.tuples(st.just("spend"), member, amount),
    st.tuples(st.just("deduct"), member, amount),
    st.tuples(st.just("transfer"), member, member, amount),
    st.tuples(st.just("pending"), member, amount, st.sampled_from([1, 3])),
    st.tuples(st.just("vest"), pick),
    st.tuples(st.just("void"), pick),
    st.tuples(st.just("reverse"), pick),
    st.tuples(st.just("settle")),
    st.tuples(st.just("vest_due")),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 2, 4, 31])),
)

# failures a random sequence is allowed to run into (anything else fails the property)
EXPECTED = {"INSUFFICIENT_FUNDS", "ALREADY_DONE", "CONFLICT", "INVALID_INPUT"}


@dataclass
class World:
    members: list[int]
    transactions: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    serial: int = 0

    def key(self) -> str:
        self.serial += 1
        return f"prop-{self.members[0]}-{self.serial}"


async def apply(runtime: Runtime, world: World, op: tuple[Any, ...]) -> None:
    name, args = op[0], op[1:]
    m = world.members
    if name == "advance":
        await advance_clock(runtime, args[0])
        return
    if name == "settle":
        await run_settle_expirations(runtime, batch_size=3)
        return
    if name == "vest_due":
        await run_vest_pending(runtime, batch_size=2)
        return
    async with runtime.transaction() as s:
        posted = None
        if name == "grant":
            posted = await service.grant(
                s, m[args[0]], args[1], idempotency_key=world.key(), lifetime_days=args[2]
            )
        elif name == "grant_xp":
            posted = await service.grant(
                s, m[args[0]], args[1], idempotency_key=world.key(), currency="xp"
            )
        elif name == "spend":
            posted = await service.spend(s, m[args[0]], args[1], idempotency_key=world.key())
        elif name == "deduct":
            posted = await service.deduct(s, m[args[0]], args[1], idempotency_key=world.key())
        elif name == "transfer":
            posted = await service.transfer(
                s, m[args[0]], m[args[1]], args[2], idempotency_key=world.key()
            )
        elif name == "pending":
            posted = await service.credit_pending(
                s,
                m[args[0]],
                args[1],
                idempotency_key=world.key(),
                pending_days=args[2],
                lifetime_days=30,
            )
            world.pending.append(posted.transaction_id)
            return
        elif name in ("vest", "void") and world.pending:
            target = world.pending[args[0] % len(world.pending)]
            posted = await (service.vest if name == "vest" else service.void)(s, target)
        elif name == "reverse" and world.transactions:
            target = world.transactions[args[0] % len(world.transactions)]
            posted = await service.reverse(s, target, memo="property")
        if posted is not None:
            world.transactions.append(posted.transaction_id)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operations, min_size=8, max_size=40))
async def test_random_operations_keep_the_ledger_sound(
    runtime: Runtime, ops: list[tuple[Any, ...]]
) -> None:
    world = World(await create_members(runtime, MEMBERS))
    for op in ops:
        try:
            await apply(runtime, world, op)
        except LedgerError as error:
            assert error.code in EXPECTED, (op, error)
            assert not error.aborted
    async with runtime.transaction() as session:
        report = await verify_session(session)
    assert report.ok, report.render()
    async with runtime.transaction() as session:
        for currency in ("points", "xp"):
            summary = await service.ledger_summary(session, currency)
            assert summary.issued == summary.outstanding + summary.spent + summary.expired
            assert min(summary.issued, summary.outstanding, summary.spent, summary.expired) >= 0
        held = await service.balances_for_members(session, world.members)
    assert all(b.available >= 0 and b.pending >= 0 for b in held.values())
