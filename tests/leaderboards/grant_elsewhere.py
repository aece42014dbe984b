"""Grant points from ANOTHER process (``python -m tests.leaderboards.grant_elsewhere EXTERNAL_ID
AMOUNT KEY``), as a worker or a second API process would: the live update must reach a
subscriber of the test's process through Redis."""

from __future__ import annotations

import asyncio
import sys

from ledger import service as ledger
from members.service import require_member
from server.runtime import Runtime
from server.settings import get_settings


async def main(external_id: str, amount: int, key: str) -> None:
    from leaderboards import updates

    runtime = await Runtime.start(get_settings())
    updates.bind(runtime)
    try:
        async with runtime.transaction() as session:
            member = await require_member(session, external_id)
            await ledger.grant(session, member.id, amount, idempotency_key=key)
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
