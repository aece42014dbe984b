"""Titles through the service: maxHolders under concurrent grants, expiry, re-grants, equip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from badges.models import MemberTitle
from badges.titles import (
    TitleInput,
    count_holders,
    equip_title,
    grant_title,
    holdings_of_members,
    require_title,
    revoke_title,
    upsert_title,
)
from server.awards import Award, AwardKind
from server.errors import DomainError
from server.runtime import Runtime
from tests.badges.helpers import all_at_once, make_members
from tests.members.helpers import make_member

NOW = datetime(2030, 5, 1, 12, tzinfo=UTC)
CXO = "chief-experience-officer"


async def make_title(runtime: Runtime, key: str = CXO, max_holders: int | None = None) -> None:
    async with runtime.transaction() as session:
        await upsert_title(
            session,
            TitleInput(key=key, name="Chief Experience Officer", max_holders=max_holders),
            now=NOW,
        )


async def grant(
    runtime: Runtime,
    member_id: int,
    key: str = CXO,
    expires_at: datetime | None = None,
    now: datetime = NOW,
) -> Award | None:
    async with runtime.transaction() as session:
        return await grant_title(session, member_id, key, expires_at=expires_at, now=now)


async def holders(runtime: Runtime, key: str = CXO, now: datetime = NOW) -> int:
    async with runtime.sessionmaker() as session:
        title = await require_title(session, key)
        return await count_holders(session, title.id, now)


async def test_max_holders_holds_under_twenty_concurrent_grants(runtime: Runtime) -> None:
    await make_title(runtime, max_holders=3)
    members = await make_members(runtime, "rush", 20)

    def op(member_id: int):
        return lambda session: grant_title(session, member_id, CXO, now=NOW)

    results = await all_at_once(runtime, [op(member_id) for member_id in members])
    granted = [r for r in results if isinstance(r, Award)]
    refused = [r for r in results if isinstance(r, DomainError)]
    assert granted == [Award(AwardKind.TITLE, key=CXO)] * 3
    assert [e.code for e in refused] == ["LIMIT_REACHED"] * 17
    assert await holders(runtime) == 3
    async with runtime.sessionmaker() as session:
        assert len(list(await session.scalars(select(MemberTitle)))) == 3


async def test_a_single_seat_title(runtime: Runtime) -> None:
    await make_title(runtime, max_holders=1)
    first, second = await make_members(runtime, "seat", 2)
    assert await grant(runtime, first) == Award(AwardKind.TITLE, key=CXO)
    assert await grant(runtime, first) is None  # already held: no new award, no error
    with pytest.raises(DomainError) as caught:
        await grant(runtime, second)
    assert (caught.value.code, caught.value.field) == ("LIMIT_REACHED", "titleKey")
    async with runtime.transaction() as session:
        await revoke_title(session, first, CXO)
    assert await grant(runtime, second) is not None  # the seat was freed


async def test_expired_titles_are_not_held_and_free_their_seat(runtime: Runtime) -> None:
    await make_title(runtime, max_holders=1)
    first, second = await make_members(runtime, "exp", 2)
    await grant(runtime, first, expires_at=NOW + timedelta(days=1))
    async with runtime.transaction() as session:
        await equip_title(session, first, CXO, now=NOW)
    later = NOW + timedelta(days=2)
    assert await holders(runtime, now=later) == 0
    async with runtime.sessionmaker() as session:
        assert (await holdings_of_members(session, [first], later))[first] == []
    with pytest.raises(DomainError) as caught:  # cannot equip an expired title
        async with runtime.transaction() as session:
            await equip_title(session, first, CXO, now=later)
    assert caught.value.code == "NOT_ELIGIBLE"
    assert await grant(runtime, second, now=later) is not None  # the seat is free again
    with pytest.raises(DomainError):
        await grant(runtime, first, now=later)  # and now it is taken


async def test_a_grant_extends_but_never_shortens(runtime: Runtime) -> None:
    await make_title(runtime)
    member_id = await make_member(runtime, "ext")

    async def expiry() -> datetime | None:
        async with runtime.sessionmaker() as session:
            return await session.scalar(
                select(MemberTitle.expires_at).where(MemberTitle.member_id == member_id)
            )

    await grant(runtime, member_id, expires_at=NOW + timedelta(days=5))
    assert await grant(runtime, member_id, expires_at=NOW + timedelta(days=2)) is None
    assert await expiry() == NOW + timedelta(days=5)
    assert await grant(runtime, member_id, expires_at=NOW + timedelta(days=9)) is None
    assert await expiry() == NOW + timedelta(days=9)
    assert await grant(runtime, member_id) is None  # no expiry is the latest of all
    assert await expiry() is None
    assert await grant(runtime, member_id, expires_at=NOW + timedelta(days=1)) is None
    assert await expiry() is None


async def test_an_expired_title_granted_again_is_a_new_holding(runtime: Runtime) -> None:
    await make_title(runtime)
    member_id = await make_member(runtime, "again")
    await grant(runtime, member_id, expires_at=NOW + timedelta(days=1))
    async with runtime.transaction() as session:
        await equip_title(session, member_id, CXO, now=NOW)
    later = NOW + timedelta(days=3)
    assert await grant(runtime, member_id, now=later) == Award(AwardKind.TITLE, key=CXO)
    async with runtime.sessionmaker() as session:
        (holding,) = (await holdings_of_members(session, [member_id], later))[member_id]
    assert (holding.granted_at, holding.expires_at, holding.equipped) == (later, None, False)


async def test_grant_refusals(runtime: Runtime) -> None:
    await make_title(runtime)
    member_id = await make_member(runtime, "bad")
    for key, expires_at, code in (
        ("nope", None, "NOT_FOUND"),
        (CXO, NOW - timedelta(seconds=1), "INVALID_INPUT"),
        (CXO, NOW, "INVALID_INPUT"),
    ):
        with pytest.raises(DomainError) as caught:
            await grant(runtime, member_id, key, expires_at)
        assert caught.value.code == code
    assert await holders(runtime) == 0


async def test_max_holders_cannot_drop_below_current_holders(runtime: Runtime) -> None:
    await make_title(runtime)
    for member_id in await make_members(runtime, "many", 3):
        await grant(runtime, member_id)
    with pytest.raises(DomainError) as caught:
        await make_title(runtime, max_holders=2)
    assert (caught.value.code, caught.value.field) == ("CONFLICT", "maxHolders")
    await make_title(runtime, max_holders=3)


async def test_concurrent_equips_leave_one_active_title(runtime: Runtime) -> None:
    keys = [f"title-{index}" for index in range(6)]
    member_id = await make_member(runtime, "fickle")
    for key in keys:
        await make_title(runtime, key)
        await grant(runtime, member_id, key)

    def op(key: str):
        return lambda session: equip_title(session, member_id, key, now=NOW)

    results = await all_at_once(runtime, [op(key) for key in keys * 2])
    assert results == [None] * 12
    async with runtime.sessionmaker() as session:
        holdings = (await holdings_of_members(session, [member_id], NOW))[member_id]
    assert len([h for h in holdings if h.equipped]) == 1
