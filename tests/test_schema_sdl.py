"""The committed ``schema.graphql`` is the public contract: it must match the code."""

from __future__ import annotations

from schema.export import SDL_PATH, current_sdl


def test_committed_sdl_matches_code() -> None:
    committed = SDL_PATH.read_text() if SDL_PATH.exists() else ""
    assert committed == current_sdl(), (
        "schema.graphql drifted from the code: review the change, then run `make schema`"
    )


def test_contract_names_exist() -> None:
    sdl = current_sdl()
    for name in (
        "me: Member",
        "member(externalId: String!): Member",
        "registerMember(",
        "members(first: Int",
        "type UserError",
    ):
        assert name in sdl, name
