"""The Redis side of the leaderboards: two Lua scripts and the calls that run them.

* ``ADD`` applies a batch of facts (member, amount, tick) to period keys: it decodes the
  stored value, adds the amount, keeps the later tick, re-encodes (``encoding.py``) and sets
  the key's expiry. It is a script because the new value depends on the stored one; one
  ``EVALSHA`` applies a whole batch, so a committed transaction costs one round trip.
  While a rebuild of a key runs, the script also journals each fact (see ``rebuild.py``).
* ``WINDOW`` answers a read in one round trip: the top ``first`` rows, or the rows around a
  member, plus the caller's own rank, leaving hidden (suspended) members out and numbering
  the others densely 1, 2, 3...

Scripts are sent by SHA; after a Redis restart (``NOSCRIPT``) they are loaded and retried.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from leaderboards.encoding import MAX_SLOT, SCORE_CAP, TIE_SLOTS, decode
from server.cache import PerClient

JOURNAL_TTL_SECONDS = 3600


@dataclass(frozen=True)
class LuaScript:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


ADD = LuaScript(
    f"""
-- KEYS[i]: a period key; ARGV[5i-4 .. 5i]: member, amount, tick, expire-at (unix seconds,
-- 0: never), source ("t:<transaction id>" or "e:<event id>", journaled during a rebuild)
local TIE, MAX_SLOT, CAP = {TIE_SLOTS}, {MAX_SLOT}, {SCORE_CAP}
for i, key in ipairs(KEYS) do
  local b = (i - 1) * 5
  local member, amount, slot = ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local expire_at = tonumber(ARGV[b + 4])
  local score = 0
  local old = redis.call('ZSCORE', key, member)
  if old then
    local value = tonumber(old)
    score = math.floor(value / TIE)
    if score < CAP then
      local old_slot = MAX_SLOT - (value - score * TIE)
      if old_slot > slot then slot = old_slot end
    end
  end
  score = score + amount
  local encoded = score * TIE
  if score < CAP then encoded = encoded + (MAX_SLOT - slot) end
  redis.call('ZADD', key, encoded, member)
  if expire_at > 0 then redis.call('EXPIREAT', key, expire_at) end
  if redis.call('EXISTS', key .. ':rebuilding') == 1 then
    local journal = key .. ':journal'
    redis.call('RPUSH', journal, ARGV[b + 5] .. ' ' .. member .. ' ' .. ARGV[b + 2] .. ' '
      .. ARGV[b + 3])
    redis.call('EXPIRE', journal, {JOURNAL_TTL_SECONDS})
  end
end
return #KEYS
"""
)

WINDOW = LuaScript(
    """
-- KEYS[1]: a period key. ARGV: first, around member ("" none), caller member ("" none),
-- hidden members... Returns {visible total, rank of the first row, "member value member
-- value ..." (one string: a reply of few elements is parsed fast), caller rank (0: none),
-- caller value}.
local key, first, around, me = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local hidden, hidden_ranks = {}, {}
for i = 4, #ARGV do
  local r = redis.call('ZREVRANK', key, ARGV[i])
  if r then
    hidden[ARGV[i]] = true
    hidden_ranks[#hidden_ranks + 1] = r
  end
end
table.sort(hidden_ranks)
local function hidden_above(raw)
  local n = 0
  for _, r in ipairs(hidden_ranks) do
    if r < raw then n = n + 1 else break end
  end
  return n
end
local total = redis.call('ZCARD', key) - #hidden_ranks
local start = 0
local rows = {}
local wanted = true
if around ~= '' then
  local r = redis.call('ZREVRANK', key, around)
  if (not r) or hidden[around] then
    wanted = false
  else
    local visible = r - hidden_above(r)
    start = visible - math.floor((first - 1) / 2)
    if start > total - first then start = total - first end
    if start < 0 then start = 0 end
  end
end
if wanted and total > 0 then
  local raw = start
  for _, h in ipairs(hidden_ranks) do
    if h <= raw then raw = raw + 1 else break end
  end
  local found = redis.call('ZREVRANGE', key, raw, raw + first - 1 + #hidden_ranks, 'WITHSCORES')
  local n = 0
  for i = 1, #found, 2 do
    if n >= first then break end
    if not hidden[found[i]] then
      rows[#rows + 1] = found[i] .. ' ' .. found[i + 1]
      n = n + 1
    end
  end
end
local me_rank, me_value = 0, ''
if me ~= '' and not hidden[me] then
  local r = redis.call('ZREVRANK', key, me)
  if r then
    me_rank = r - hidden_above(r) + 1
    me_value = redis.call('ZSCORE', key, me)
  end
end
return {total, start + 1, table.concat(rows, ' '), me_rank, me_value}
"""
)


async def run_script(
    client: aioredis.Redis, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        await client.script_load(script.source)
        return await client.evalsha(script.sha, len(keys), *keys, *args)


@dataclass(frozen=True)
class Fact:
    """One increment of one period key."""

    key: str
    member_id: int
    amount: int
    slot: int
    expire_at: int  # unix seconds; 0: the key never expires (ALL_TIME)
    source: str  # "t:<transaction id>" / "e:<event id>"


def add_args(facts: Sequence[Fact]) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    args: list[Any] = []
    for fact in facts:
        keys.append(fact.key)
        args += [fact.member_id, fact.amount, fact.slot, fact.expire_at, fact.source]
    return keys, args


async def apply(
    client: aioredis.Redis,
    facts: Sequence[Fact],
    publish: Sequence[tuple[str, str]] = (),
) -> None:
    """Apply ``facts`` and publish ``(channel, message)`` pairs in ONE round trip."""
    if not facts and not publish:
        return
    if not facts:  # live messages only (a member's update): shared with concurrent callers
        await publisher(client).publish(publish)
        return
    keys, args = add_args(facts)
    pipe = client.pipeline(transaction=False)
    pipe.evalsha(ADD.sha, len(keys), *keys, *args)
    for channel, message in publish:
        pipe.publish(channel, message)
    results = await pipe.execute(raise_on_error=False)
    if isinstance(results[0], NoScriptError):  # Redis restarted: load, run again
        await client.script_load(ADD.source)
        await client.evalsha(ADD.sha, len(keys), *keys, *args)
        results = results[1:]
    _raise_first_failure(results)


def _raise_first_failure(results: Sequence[object]) -> None:
    """A pipeline executed with ``raise_on_error=False`` returns its errors: raise the first."""
    for result in results:
        if isinstance(result, Exception):
            raise result


class Publisher:
    """Live messages for Redis pub/sub: those handed over within one turn of the event loop go
    out in ONE pipeline. Each caller still waits until the pipeline carrying its messages has
    been sent, and sees its error, so a worker or a command that publishes and then exits
    loses nothing; under load, concurrent requests share a round trip instead of paying one
    each (a spend publishes the member's new balance after every commit)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._pending: list[tuple[str, str]] = []
        self._batch: asyncio.Task[None] | None = None

    async def publish(self, messages: Sequence[tuple[str, str]]) -> None:
        self._pending.extend(messages)
        if self._batch is None or self._batch.done():  # done: one that never got to send
            self._batch = asyncio.create_task(self._send())
        # shielded: a caller cancelled while waiting must not cancel the others' messages
        await asyncio.shield(self._batch)

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the callers of this turn add theirs first
        messages, self._pending, self._batch = self._pending, [], None
        if len(messages) == 1:
            await self.client.publish(*messages[0])
            return
        pipe = self.client.pipeline(transaction=False)
        for channel, message in messages:
            pipe.publish(channel, message)
        _raise_first_failure(await pipe.execute(raise_on_error=False))


# The client's publisher (one per Redis client, so per process and event loop).
publisher: PerClient[aioredis.Redis, Publisher] = PerClient(Publisher)


@dataclass(frozen=True)
class Row:
    rank: int
    member_id: int
    score: int
    slot: int | None


@dataclass(frozen=True)
class Window:
    total: int  # visible members on the board
    rows: list[Row]
    me: Row | None


async def window(
    client: aioredis.Redis,
    key: str,
    *,
    first: int,
    around_member_id: int | None,
    me_member_id: int | None,
    hidden: Sequence[int],
) -> Window:
    """ONE round trip: the rows (top or around a member) and the caller's rank."""
    args: list[Any] = [
        first,
        "" if around_member_id is None else around_member_id,
        "" if me_member_id is None else me_member_id,
        *hidden,
    ]
    total, first_rank, packed, me_rank, me_value = await run_script(client, WINDOW, [key], args)
    flat = packed.split() if packed else []
    rows = []
    for offset, index in enumerate(range(0, len(flat), 2)):
        score, slot = decode(flat[index + 1])
        rows.append(Row(int(first_rank) + offset, int(flat[index]), score, slot))
    me = None
    if int(me_rank) > 0 and me_member_id is not None:
        score, slot = decode(me_value)
        me = Row(int(me_rank), me_member_id, score, slot)
    return Window(int(total), rows, me)


async def entries(client: aioredis.Redis, key: str) -> list[tuple[int, int]]:
    """Every (member id, encoded value) of ``key``, best first (tests, the archive check)."""
    raw: list[Any] = await client.zrevrange(key, 0, -1, withscores=True)
    return [(int(member), int(value)) for member, value in raw]
