"""API keys and scopes, end to end through the API."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from server.auth import Role, create_api_key, principal_for_api_key
from server.runtime import Runtime
from tests.api import GraphQLClient

REGISTER = """mutation($id: String!) {
  registerMember(input: {externalId: $id}) { member { externalId } errors { code } } }"""


async def make_key(runtime: Runtime, scope: str) -> str:
    async with runtime.transaction() as session:
        return await create_api_key(session, name=f"{scope}-key", scope=scope)


async def test_events_key_registers_and_reads_members_only(
    runtime: Runtime, api: GraphQLClient
) -> None:
    key = await make_key(runtime, "events")
    registered = await api.post(REGISTER, {"id": "shop-1"}, key)
    assert registered.data["registerMember"]["errors"] == []
    read = await api.post('{ member(externalId: "shop-1") { externalId } }', token=key)
    assert read.data == {"member": {"externalId": "shop-1"}}
    listing = await api.post("{ members { edges { cursor } } }", token=key)
    assert listing.error_codes == ["FORBIDDEN"]
    me = await api.post("{ me { externalId } }", token=key)
    assert me.error_codes == ["FORBIDDEN"]


async def test_admin_key_lists_members(runtime: Runtime, api: GraphQLClient) -> None:
    key = await make_key(runtime, "admin")
    await api.post(REGISTER, {"id": "m-1"}, key)
    listing = await api.post("{ members { edges { node { externalId } } } }", token=key)
    assert listing.data["members"]["edges"] == [{"node": {"externalId": "m-1"}}]


async def test_keys_are_stored_hashed_and_scoped(runtime: Runtime) -> None:
    key = await make_key(runtime, "events")
    async with runtime.sessionmaker() as session:
        stored = (await session.execute(text("SELECT key_hash, prefix FROM api_keys"))).one()
        assert key not in stored.key_hash and stored.prefix == key[:10]
        principal = await principal_for_api_key(session, key)
    assert principal.role is Role.EVENTS
    async with runtime.transaction() as session:
        with pytest.raises(ValueError):
            await create_api_key(session, name="x", scope="root")
