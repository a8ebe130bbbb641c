"""The live side of a session in Redis: event numbering, the live event log, the text of
answers while they stream, and fan-out.

One Lua script numbers a batch of events (`seq`, contiguous per session), appends them to
the session's log (a Redis stream whose entry ids are the seqs), appends streamed text to
the answer's live buffer and publishes the batch on the session's pub/sub channel, all
atomically. Pub/sub is at-most-once: readers recover anything it drops from the log (see
hub.py). In async code the batches of an event loop are pipelined together
(`publish_async`).

Every key of a session shares the hash tag `{<session>}` so the script runs on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import NoScriptError

from sessions_app.conf import app_settings, key_prefix
from sessions_app.infra.batching import GroupedCall, grouped

Event = dict[str, Any]

# KEYS: 1 seq, 2 log, 3 the session's event channel, then live keys (text buffer, then its
# seq) referenced from ARGV. ARGV: 1 maxlen, 2 ttl, then per event: body (JSON without its
# leading "{"), index of its live text key in KEYS (0 for none), text to append.
# The batch is published on the event channel as one message: the frames joined by "\n"
# (JSON text holds no raw newline).
_EMIT_LUA = """
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = seq + 1
local frames = {}
for i = 3, #ARGV, 3 do
  seq = seq + 1
  local frame = '{"seq":' .. seq .. ',' .. ARGV[i]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'f', frame)
  frames[#frames + 1] = frame
  local live = tonumber(ARGV[i + 1])
  if live > 0 then
    redis.call('APPEND', KEYS[live], ARGV[i + 2])
    redis.call('SET', KEYS[live + 1], seq)
  end
end
redis.call('SET', KEYS[1], seq, 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', KEYS[3], table.concat(frames, '\\n'))
return first
"""
_EMIT_SHA = hashlib.sha1(_EMIT_LUA.encode(), usedforsecurity=False).hexdigest()  # EVALSHA names scripts by SHA-1


class Keys:
    @staticmethod
    def seq(session_id: str) -> str:
        return f"{key_prefix()}:{{{session_id}}}:seq"

    @staticmethod
    def log(session_id: str) -> str:
        return f"{key_prefix()}:{{{session_id}}}:log"

    @staticmethod
    def events_channel(session_id: str) -> str:
        """Redis pub/sub channel on which the numbering script publishes each batch."""
        return f"{key_prefix()}:{{{session_id}}}:ev"

    @staticmethod
    def live_text(session_id: str, message_id: str, part: str) -> str:
        return f"{key_prefix()}:{{{session_id}}}:m:{message_id}:{part}"

    @staticmethod
    def live_seq(session_id: str, message_id: str) -> str:
        return f"{key_prefix()}:{{{session_id}}}:m:{message_id}:seq"

    @staticmethod
    def presence(session_id: str) -> str:
        return f"{key_prefix()}:{{{session_id}}}:presence"

    @staticmethod
    def cancel_channel() -> str:
        return f"{key_prefix()}:cancel"

    @staticmethod
    def workers() -> str:
        """Sorted set of worker ids scored by their last heartbeat."""
        return f"{key_prefix()}:workers"

    @staticmethod
    def rate(user_id: int, window: int) -> str:
        return f"{key_prefix()}:rate:{user_id}:{window}"


LIVE_PARTS = ("text", "reasoning")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch of events turned into the Lua script's keys and arguments."""

    keys: list[str]
    args: list[Any]
    bodies: list[bytes]


def prepare(session_id: str, events: Sequence[Event]) -> PreparedBatch:
    """Serialise events once; the script prefixes each with its seq."""
    keys = [Keys.seq(session_id), Keys.log(session_id), Keys.events_channel(session_id)]
    args: list[Any] = [app_settings.EVENT_LOG_MAXLEN, int(app_settings.EVENT_LOG_TTL_SECONDS)]
    bodies = []
    live_index: dict[str, int] = {}
    for event in events:
        body = orjson.dumps(event)[1:]  # drop "{": the script writes '{"seq":N,' before it
        bodies.append(body)
        index = 0
        if event["type"] == "delta":
            text_key = Keys.live_text(session_id, event["messageId"], event.get("part", "text"))
            if text_key not in live_index:
                live_index[text_key] = len(keys) + 1
                keys.extend([text_key, Keys.live_seq(session_id, event["messageId"])])
            index = live_index[text_key]
        args.extend([body, index, event.get("text", "") if index else ""])
    return PreparedBatch(keys=keys, args=args, bodies=bodies)


def frames_for(first_seq: int, bodies: Sequence[bytes]) -> list[str]:
    """The frames exactly as the script stored them."""
    return [f'{{"seq":{first_seq + i},{body.decode()}' for i, body in enumerate(bodies)]


# --- clients -----------------------------------------------------------------------------

_sync_lock = threading.Lock()
_sync_client: redis.Redis | None = None
_async_clients: dict[int, aioredis.Redis] = {}
# A burst beyond the pool's size waits for a free connection rather than failing.
_POOL_WAIT_SECONDS = 20


def sync_redis() -> redis.Redis:
    """Process-wide thread-safe client (a connection pool underneath)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            pool = redis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, max_connections=app_settings.REDIS_MAX_CONNECTIONS, timeout=_POOL_WAIT_SECONDS
            )
            _sync_client = redis.Redis(connection_pool=pool)
        return _sync_client


def async_redis() -> aioredis.Redis:
    """One client per event loop: asyncio connections cannot cross loops."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(id(loop))
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=app_settings.REDIS_MAX_CONNECTIONS, timeout=_POOL_WAIT_SECONDS
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[id(loop)] = client
    return client


# --- publishing --------------------------------------------------------------------------


async def _emit_pipelined(batches: list[PreparedBatch]) -> list[int | Exception]:
    """Run the numbering script once per batch, in order, in one pipeline. Per-batch
    outcomes: the first seq, or the error of that batch.

    Every batch of an event loop goes through here (`publish_async`): while one pipeline is
    on the wire the next batches gather, so the busier the loop, the more each round trip
    carries (the per-command cost of redis-py dominated the worker's CPU when each turn sent
    its own; decision 012)."""
    client = async_redis()
    results = list(await _evalshas(client.pipeline(transaction=False), batches).execute(raise_on_error=False))
    missing = _without_script(results)
    if missing:  # Redis restarted or flushed its scripts: load it, run those again in order
        await client.script_load(_EMIT_LUA)
        again = _evalshas(client.pipeline(transaction=False), [batches[i] for i in missing])
        for i, result in zip(missing, await again.execute(raise_on_error=False), strict=True):
            results[i] = result
    return [result if isinstance(result, Exception) else int(result) for result in results]


P = TypeVar("P", redis.client.Pipeline, aioredis.client.Pipeline)


def _evalshas(pipe: P, batches: Sequence[PreparedBatch]) -> P:
    """Queue the numbering script once per batch, in order, on a pipeline of either client."""
    for batch in batches:
        pipe.execute_command("EVALSHA", _EMIT_SHA, len(batch.keys), *batch.keys, *batch.args)
    return pipe


def _without_script(results: Sequence[Any]) -> list[int]:
    """Indices of the batches Redis refused for not knowing the script (it restarted)."""
    return [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]


def publish(session_id: str, events: Sequence[Event]) -> list[str]:
    """Number, log and fan out events in one Redis call (sync; services, on commit).
    Returns the frames as sent."""
    return publish_many([(session_id, events)])[0]


def publish_many(batches: Sequence[tuple[str, Sequence[Event]]]) -> list[list[str]]:
    """`publish` for the batches of many sessions, in order, in one pipeline (a group of
    sends, on commit). The frames of each batch; the first batch Redis refused raises."""
    sent = [i for i, (_, events) in enumerate(batches) if events]
    if not sent:
        return [[] for _ in batches]
    prepared = [prepare(*batches[i]) for i in sent]
    client = sync_redis()
    results = list(_evalshas(client.pipeline(transaction=False), prepared).execute(raise_on_error=False))
    missing = _without_script(results)
    if missing:  # Redis restarted or flushed its scripts: load it, run those again in order
        client.script_load(_EMIT_LUA)
        again = _evalshas(client.pipeline(transaction=False), [prepared[i] for i in missing])
        for i, result in zip(missing, again.execute(raise_on_error=False), strict=True):
            results[i] = result
    frames: list[list[str]] = [[] for _ in batches]
    for i, batch, first in zip(sent, prepared, results, strict=True):
        if isinstance(first, Exception):
            raise first
        frames[i] = frames_for(int(first), batch.bodies)
    return frames


async def publish_async(session_id: str, events: Sequence[Event]) -> list[str]:
    """Number, log and fan out events (async; the worker's hot path), pipelined with the
    other batches of this event loop. Returns the frames as sent."""
    if not events:
        return []
    batch = prepare(session_id, events)
    publisher = grouped("publish", lambda: GroupedCall(_emit_pipelined, max_batch=None))
    return frames_for(await publisher.call(batch), batch.bodies)


def parse_published(data: bytes) -> tuple[int, list[str]]:
    """(first seq, frames) of a batch received on an events channel."""
    frames = data.decode().split("\n")
    return seq_of(frames[0]), frames


# --- reading -----------------------------------------------------------------------------


def seq_of(frame: str) -> int:
    """The seq of a frame: it is always the first field."""
    return int(frame[7 : frame.index(",", 7)])


async def last_seq(session_id: str) -> int:
    value = await async_redis().get(Keys.seq(session_id))
    return int(value or 0)


async def last_seqs(session_ids: Sequence[str]) -> list[int]:
    """Last seq of many sessions in one round trip."""
    if not session_ids:
        return []
    pipe = async_redis().pipeline(transaction=False)
    for session_id in session_ids:
        pipe.get(Keys.seq(session_id))
    return [int(v or 0) for v in await pipe.execute()]


def last_seq_sync(session_id: str) -> int:
    return int(sync_redis().get(Keys.seq(session_id)) or 0)  # type: ignore[arg-type]


def _entries_to_frames(entries: list[Any]) -> list[str]:
    return [fields[b"f"].decode() for _id, fields in entries]


async def read_log(session_id: str, after: int, until: int | None = None, page: int = 1000) -> list[str]:
    """Frames with after < seq <= until from the live log (what it still keeps)."""
    client = async_redis()
    frames: list[str] = []
    start = after + 1
    end = f"{until}-0" if until is not None else "+"
    while True:
        entries = await client.xrange(Keys.log(session_id), min=f"{start}-0", max=end, count=page) or []
        frames.extend(_entries_to_frames(entries))
        if len(entries) < page:
            return frames
        start = seq_of(frames[-1]) + 1


def read_log_sync(session_id: str, after: int, limit: int) -> list[str]:
    entries = sync_redis().xrange(Keys.log(session_id), min=f"{after + 1}-0", max="+", count=limit)
    return _entries_to_frames(entries)  # type: ignore[arg-type]


@dataclass
class LiveContent:
    parts: list[dict[str, str]]
    content_seq: int


def _live_content_from(values: list[Any]) -> LiveContent:
    texts = dict(zip(LIVE_PARTS, values[: len(LIVE_PARTS)], strict=True))
    parts = [{"type": part, "text": texts[part].decode()} for part in ("reasoning", "text") if texts[part]]
    return LiveContent(parts=parts, content_seq=int(values[-1] or 0))


def _live_keys(session_id: str, message_id: str) -> list[str]:
    return [*(Keys.live_text(session_id, message_id, p) for p in LIVE_PARTS), Keys.live_seq(session_id, message_id)]


async def live_contents(session_id: str, message_ids: Sequence[str]) -> dict[str, LiveContent]:
    """Streamed content of answers so far, each with the seq of its last delta (atomic)."""
    if not message_ids:
        return {}
    pipe = async_redis().pipeline(transaction=True)
    for message_id in message_ids:
        pipe.mget(_live_keys(session_id, message_id))
    results = await pipe.execute()
    return {mid: _live_content_from(values) for mid, values in zip(message_ids, results, strict=True)}


def live_content_sync(session_id: str, message_id: str) -> LiveContent:
    values = sync_redis().mget(_live_keys(session_id, message_id))
    return _live_content_from(values)  # type: ignore[arg-type]


def expire_live_content_sync(session_id: str, message_id: str, seconds: int = 600) -> None:
    """Keep a settled answer's live buffer a while: a snapshot racing the turn's end reads it."""
    pipe = sync_redis().pipeline(transaction=False)
    for key in _live_keys(session_id, message_id):
        pipe.expire(key, seconds)
    pipe.execute()


def signal_cancel_sync(session_id: str, turn_pks: Sequence[int]) -> None:
    """Tell every worker which turns to abort (a worker acts on the ones it runs)."""
    if turn_pks:
        payload = orjson.dumps({"session": session_id, "turns": list(turn_pks)})
        sync_redis().publish(Keys.cancel_channel(), payload)


async def presence_change(session_id: str, client_id: str, delta: int) -> tuple[bool, list[str]]:
    """Count a connection of `client_id` in or out; returns (whether the set of online
    clientIds changed, the clientIds online now)."""
    client = async_redis()
    key = Keys.presence(session_id)
    count = int(await client.hincrby(key, client_id, delta))
    changed = (delta > 0 and count == delta) or (delta < 0 and count <= 0)
    if count <= 0:
        await client.hdel(key, client_id)
    return changed, await online(session_id)


async def online(session_id: str) -> list[str]:
    return sorted(
        (k.decode() if isinstance(k, bytes) else k) for k in await async_redis().hkeys(Keys.presence(session_id))
    )
