"""A small GraphQL client for tests, plus token helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from server.auth import issue_token
from server.settings import get_settings


def member_token(external_id: str, ttl_seconds: int = 600) -> str:
    return issue_token(get_settings(), subject=external_id, role="member", ttl_seconds=ttl_seconds)


def admin_token(ttl_seconds: int = 600) -> str:
    return issue_token(get_settings(), subject="tests", role="admin", ttl_seconds=ttl_seconds)


@dataclass
class Result:
    status: int
    body: dict[str, Any]

    @property
    def data(self) -> dict[str, Any]:
        assert self.body.get("errors") is None, self.body
        data: dict[str, Any] = self.body["data"]
        return data

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or [])

    @property
    def error_codes(self) -> list[str | None]:
        return [(e.get("extensions") or {}).get("code") for e in self.errors]


class GraphQLClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> Result:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        return Result(response.status_code, response.json())

    async def admin(self, query: str, variables: dict[str, Any] | None = None) -> Result:
        return await self.post(query, variables, admin_token())

    async def as_member(
        self, external_id: str, query: str, variables: dict[str, Any] | None = None
    ) -> Result:
        return await self.post(query, variables, member_token(external_id))

    async def register(self, external_id: str, **fields: Any) -> dict[str, Any]:
        result = await self.admin(
            """mutation($input: RegisterMemberInput!) {
                 registerMember(input: $input) { member { id externalId } errors { code field } }
               }""",
            {"input": {"externalId": external_id, **fields}},
        )
        payload: dict[str, Any] = result.data["registerMember"]
        assert payload["errors"] == [], payload
        return payload["member"]
