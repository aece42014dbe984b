"""Write the committed SDL: ``python -m schema.export`` (``make schema``)."""

from __future__ import annotations

from pathlib import Path

from schema.root import build_schema

SDL_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"


def current_sdl() -> str:
    return build_schema().as_str() + "\n"


if __name__ == "__main__":
    SDL_PATH.write_text(current_sdl())
    print(f"wrote {SDL_PATH}")
