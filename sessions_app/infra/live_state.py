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
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.connection import DefaultParser
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from sessions_app.conf import app_settings, key_prefix
from sessions_app.infra.batching import GroupedCall, grouped

logger = logging.getLogger(__name__)

Event = dict[str, Any]

# --- the scripts --------------------------------------------------------------------------
#
# Shared by the scripts below: a session's numbering and the emission of a batch.
#
# Numbering never goes back. A session's counter is created at 0 when the session is
# created (`start_numbering_sync`). A counter that is missing, or below `floor` (a seq the
# caller has seen), means Redis lost it: it restarted without its data, came back with an
# older copy, or the idle key expired. Numbering then goes on from the time in microseconds
# (about 1.7e15, below 2^53, so exact in every JSON reader), above any seq the session ever
# had (that would take more than a million events a second). Devices detect nothing: the
# server sends connected devices a snapshot (web/hub.py), and a resume from below the jump
# finds events missing and gets a snapshot (docs/protocol.md, "Numbering across a reset").
_NUMBERING_LUA = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function last_seq(key, floor)
  local seq = tonumber(redis.call('GET', key) or '')
  if seq == nil or seq < floor then
    seq = math.max(now_us(), floor)
  end
  return seq
end
local function emit(seq_key, log_key, channel, maxlen, ttl, seq, bodies, live, texts)
  local first = seq + 1
  local frames = {}
  for i = 1, #bodies do
    seq = seq + 1
    local id = string.format('%d', seq)
    local frame = '{"seq":' .. id .. ',' .. bodies[i]
    redis.call('XADD', log_key, 'MAXLEN', '~', maxlen, id .. '-0', 'f', frame)
    frames[#frames + 1] = frame
    if live[i] > 0 then
      redis.call('APPEND', KEYS[live[i]], texts[i])
      redis.call('SET', KEYS[live[i] + 1], id)
    end
  end
  redis.call('SET', seq_key, string.format('%d', seq), 'EX', ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('PUBLISH', channel, table.concat(frames, '\\n'))
  return first
end
"""

# Number, log and fan out one batch. KEYS: 1 seq, 2 log, 3 the session's event channel, then
# per streamed part (text, reasoning) its live text key and the key of its seq. ARGV: 1
# maxlen, 2 ttl, 3 floor, 4 the number of live text keys; per live text key: the bytes the
# caller wrote to it before (-2: not checked; -1: set it to the next argument first) and
# that text; then per event: body (JSON without its leading "{"), index of its live text
# key in KEYS (0 for none), text to append. Returns the first seq; or -1 when a live text
# is not what the caller wrote (Redis lost it): nothing is written, and the caller sends
# the batch again with the text so far. A batch sent again after its reply was lost (the
# connection dropped) finds its own text already there and answers the first seq it got
# then: a delta is never published twice.
# The batch is published on the event channel as one message: the frames joined by "\n"
# (JSON text holds no raw newline).
_EMIT_LUA = (
    _NUMBERING_LUA
    + """
local nlive = tonumber(ARGV[4])
local bodies, live, texts = {}, {}, {}
for i = 5 + 2 * nlive, #ARGV, 3 do
  bodies[#bodies + 1] = ARGV[i]
  live[#live + 1] = tonumber(ARGV[i + 1])
  texts[#texts + 1] = ARGV[i + 2]
end
local applied = nil
for k = 0, nlive - 1 do
  local written = tonumber(ARGV[5 + 2 * k])
  if written >= 0 then
    local have = redis.call('STRLEN', KEYS[4 + 2 * k])
    if have ~= written then
      local added, last = 0, 0
      for i = 1, #bodies do
        if live[i] == 4 + 2 * k then
          added = added + #texts[i]
          last = i
        end
      end
      if added > 0 and have == written + added then
        applied = tonumber(redis.call('GET', KEYS[5 + 2 * k]) or '0') - (last - 1)
      else
        return -1
      end
    end
  end
end
if applied ~= nil then
  return applied
end
for k = 0, nlive - 1 do
  if tonumber(ARGV[5 + 2 * k]) == -1 then
    redis.call('SET', KEYS[4 + 2 * k], ARGV[6 + 2 * k])
  end
end
return emit(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], last_seq(KEYS[1], tonumber(ARGV[3])), bodies, live, texts)
"""
)

# Presence: one web process states which clientIds it has devices of in a session, with a
# lease. KEYS: 1 seq, 2 log, 3 channel, 4 the presence hash (field "<process>|<clientId>",
# value: when its lease ends, Unix ms), 5 the online list last announced. ARGV: 1 maxlen,
# 2 ttl, 3 lease (ms), 4 the process, then its clientIds. Entries whose lease ended (their
# process died) are dropped. When the online list changes, the `presence` event is numbered
# and published in the same step, so presence events follow the changes in order. Returns
# {online list as JSON, first seq (0: unchanged), event body}.
_PRESENCE_LUA = (
    _NUMBERING_LUA
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, process = tonumber(ARGV[3]), ARGV[4]
local entries = redis.call('HGETALL', KEYS[4])
local online = {}
for i = 1, #entries, 2 do
  local field = entries[i]
  local bar = string.find(field, '|', 1, true)
  if bar == nil or string.sub(field, 1, bar - 1) == process or tonumber(entries[i + 1]) <= now then
    redis.call('HDEL', KEYS[4], field)
  else
    online[string.sub(field, bar + 1)] = true
  end
end
for i = 5, #ARGV do
  redis.call('HSET', KEYS[4], process .. '|' .. ARGV[i], string.format('%d', now + lease))
  online[ARGV[i]] = true
end
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('PEXPIRE', KEYS[4], lease)
end
local names = {}
for name in pairs(online) do names[#names + 1] = name end
table.sort(names)
for i = 1, #names do names[i] = cjson.encode(names[i]) end
local list = '[' .. table.concat(names, ',') .. ']'
if redis.call('GET', KEYS[5]) == list then
  return {list, 0, ''}
end
redis.call('SET', KEYS[5], list, 'EX', ARGV[2])
local body = '"type":"presence","at":' .. string.format('%d', now) .. ',"online":' .. list .. '}'
local first = emit(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], last_seq(KEYS[1], 0), {body}, {0}, {''})
return {list, first, body}
"""
)

# Move a session's numbering above `floor` (a seq a reader has seen) if it is below it:
# Redis came back without it, or with an older copy. KEYS: 1 seq. ARGV: 1 floor, 2 ttl.
# Returns the last seq, moved or not.
_RENUMBER_LUA = (
    _NUMBERING_LUA
    + """
local floor = tonumber(ARGV[1])
local seq = tonumber(redis.call('GET', KEYS[1]) or '')
if seq ~= nil and seq >= floor then
  return seq
end
seq = last_seq(KEYS[1], floor)
redis.call('SET', KEYS[1], string.format('%d', seq), 'EX', ARGV[2])
return seq
"""
)


@dataclass(frozen=True)
class _Script:
    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        # EVALSHA names scripts by SHA-1; computed once (it is on every batch's path).
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest())


EMIT = _Script(_EMIT_LUA)
PRESENCE = _Script(_PRESENCE_LUA)
RENUMBER = _Script(_RENUMBER_LUA)
# Written when Redis lost a live text the caller had written to: the batch goes again with
# the text so far.
LIVE_TEXT_LOST = -1
# A live text's bytes as the caller wrote them are not known: not checked.
UNCHECKED = -2
# Write the live text again (to the argument that follows) before appending.
REWRITE = -1


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
        """Hash of "<web process>|<clientId>" -> the end of that process's lease (Unix ms)."""
        return f"{key_prefix()}:{{{session_id}}}:presence"

    @staticmethod
    def online(session_id: str) -> str:
        """The online clientIds last announced, as the JSON list of the `presence` event."""
        return f"{key_prefix()}:{{{session_id}}}:online"

    @staticmethod
    def cancel_channel() -> str:
        return f"{key_prefix()}:cancel"

    @staticmethod
    def offered_turns() -> str:
        """The list on which workers waiting for work block; a set of turns (a JSON list
        of pks) pushed to it goes to one of them or is taken back at once (decision 027)."""
        return f"{key_prefix()}:offered-turns"

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
class LiveWrites:
    """What a turn has written to its answer's live texts before a batch: the bytes of
    each part (text, reasoning), and a way to get that text again (the first n bytes of a
    part) should Redis have lost it."""

    written: Mapping[str, int]
    text_so_far: Callable[[str, int], bytes]


@dataclass(frozen=True)
class PreparedBatch:
    """A script call: a batch of events turned into the numbering script's keys and
    arguments (or a presence or renumbering call)."""

    keys: list[str]
    args: list[Any]
    bodies: list[bytes] = field(default_factory=list)
    script: _Script = EMIT
    # The same batch with its live texts written again first (Redis lost them).
    again: Callable[[], PreparedBatch] | None = None


def prepare(
    session_id: str,
    events: Sequence[Event],
    *,
    floor: int = 0,
    live: LiveWrites | None = None,
    rewrite: bool = False,
) -> PreparedBatch:
    """Serialise events once; the script prefixes each with its seq. `floor`: a seq of the
    session the caller has seen (numbering below it was lost); `live`: what the caller
    wrote to the live texts this batch appends to, checked by the script."""
    keys = [Keys.seq(session_id), Keys.log(session_id), Keys.events_channel(session_id)]
    parts: list[str] = []  # the part of each live text key, in KEYS order
    index_of: dict[str, int] = {}
    triples: list[Any] = []
    bodies = []
    for event in events:
        body = orjson.dumps(event)[1:]  # drop "{": the script writes '{"seq":N,' before it
        bodies.append(body)
        index = 0
        if event["type"] == "delta":
            part = event.get("part", "text")
            text_key = Keys.live_text(session_id, event["messageId"], part)
            index = index_of.get(text_key, 0)
            if not index:
                index = index_of[text_key] = len(keys) + 1
                keys.extend([text_key, Keys.live_seq(session_id, event["messageId"])])
                parts.append(part)
        triples.extend([body, index, event.get("text", "") if index else ""])
    checks: list[Any] = []
    for part in parts:
        if live is None:
            checks.extend([UNCHECKED, ""])
        elif rewrite:
            checks.extend([REWRITE, live.text_so_far(part, live.written.get(part, 0))])
        else:
            checks.extend([live.written.get(part, 0), ""])
    args = [
        app_settings.EVENT_LOG_MAXLEN,
        int(app_settings.EVENT_LOG_TTL_SECONDS),
        floor,
        len(parts),
        *checks,
        *triples,
    ]
    again = None
    if live is not None and parts and not rewrite:
        again = partial(prepare, session_id, events, floor=floor, live=live, rewrite=True)
    return PreparedBatch(keys=keys, args=args, bodies=bodies, again=again)


def frames_for(first_seq: int, bodies: Sequence[bytes]) -> list[str]:
    """The frames exactly as the script stored them."""
    return [f'{{"seq":{first_seq + i},{body.decode()}' for i, body in enumerate(bodies)]


# --- clients -----------------------------------------------------------------------------

_sync_lock = threading.Lock()
_sync_client: redis.Redis | None = None
# Per event loop, forgotten with it (an id could be reused by a later loop).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()
# A burst beyond the pool's size waits for a free connection rather than failing.
_POOL_WAIT_SECONDS = 20
# How every connection names its client library to Redis (`CLIENT SETINFO`, Redis 7.2 on),
# as redis-py would, with its version given once: otherwise redis-py reads it from the
# package's metadata for every new connection (~0.5 ms, up to 6 ms in a cold process; a
# pool grows while a burst runs).
_DRIVER_INFO = DriverInfo(lib_version=redis.__version__)


def sync_redis() -> redis.Redis:
    """Process-wide thread-safe client (a connection pool underneath)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            pool = redis.BlockingConnectionPool.from_url(
                settings.REDIS_URL,
                max_connections=app_settings.REDIS_MAX_CONNECTIONS,
                timeout=_POOL_WAIT_SECONDS,
                driver_info=_DRIVER_INFO,
            )
            _sync_client = redis.Redis(connection_pool=pool)
        return _sync_client


def async_redis() -> aioredis.Redis:
    """One client per event loop: asyncio connections cannot cross loops."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=app_settings.REDIS_MAX_CONNECTIONS,
            timeout=_POOL_WAIT_SECONDS,
            driver_info=_DRIVER_INFO,
        )
        client = aioredis.Redis(connection_pool=pool)
        _async_clients[loop] = client
    return client


def async_pubsub(
    client: aioredis.Redis | None = None, *, ignore_subscribe_messages: bool = False
) -> aioredis.client.PubSub:
    """A pub/sub of `client` (the loop's by default) that hands each message on as it came.
    With hiredis every pub/sub message is a "push", and redis-py's default handler formats
    the whole of it into a debug line, debug logging on or off (~3% of a web process's CPU
    in a burst of sends). Only hiredis's parser takes another handler (Python's RESP2
    parser has no push handling): elsewhere redis-py's default stays."""
    client = client or async_redis()
    parser = client.connection_pool.connection_kwargs.get("parser_class", DefaultParser)
    as_received = _as_received if HIREDIS_AVAILABLE and parser is DefaultParser else None
    return client.pubsub(ignore_subscribe_messages=ignore_subscribe_messages, push_handler_func=as_received)


async def _as_received(message: Any) -> Any:
    return message


# --- running scripts ---------------------------------------------------------------------

P = TypeVar("P", redis.client.Pipeline, aioredis.client.Pipeline)
# Rounds of running again what Redis refused for not knowing a script (it restarted) or
# for a lost live text: each needs at most one.
_ROUNDS = 3


def _queue(pipe: P, batches: Sequence[PreparedBatch]) -> P:
    """Queue one script call per batch, in order, on a pipeline of either client."""
    for batch in batches:
        pipe.execute_command("EVALSHA", batch.script.sha, len(batch.keys), *batch.keys, *batch.args)
    return pipe


def _to_redo(results: Sequence[Any], batches: Sequence[PreparedBatch]) -> list[tuple[int, PreparedBatch]]:
    """The calls to run again, and how: unchanged where Redis did not know the script,
    with the live texts written again where it lost them."""
    redo = []
    for i, (result, batch) in enumerate(zip(results, batches, strict=True)):
        if isinstance(result, NoScriptError):
            redo.append((i, batch))
        elif batch.script is EMIT and result == LIVE_TEXT_LOST and batch.again is not None:
            redo.append((i, batch.again()))
    return redo


def _run_sync(batches: Sequence[PreparedBatch]) -> list[Any]:
    client = sync_redis()
    batches = list(batches)
    results = list(_queue(client.pipeline(transaction=False), batches).execute(raise_on_error=False))
    for _ in range(_ROUNDS):
        redo = _to_redo(results, batches)
        if not redo:
            break
        for script in {b.script for i, b in redo if isinstance(results[i], NoScriptError)}:
            client.script_load(script.text)
        again = _queue(client.pipeline(transaction=False), [b for _, b in redo]).execute(raise_on_error=False)
        for (i, batch), result in zip(redo, again, strict=True):
            batches[i], results[i] = batch, result
    return results


async def _run_async(batches: Sequence[PreparedBatch]) -> list[Any]:
    client = async_redis()
    batches = list(batches)
    results = list(await _queue(client.pipeline(transaction=False), batches).execute(raise_on_error=False))
    for _ in range(_ROUNDS):
        redo = _to_redo(results, batches)
        if not redo:
            break
        for script in {b.script for i, b in redo if isinstance(results[i], NoScriptError)}:
            await client.script_load(script.text)
        again = await _queue(client.pipeline(transaction=False), [b for _, b in redo]).execute(raise_on_error=False)
        for (i, batch), result in zip(redo, again, strict=True):
            batches[i], results[i] = batch, result
    return results


def _first_seq(result: Any) -> int:
    if isinstance(result, Exception):
        raise result
    first = int(result)
    if first == LIVE_TEXT_LOST:
        raise RedisError("a live text was lost and could not be written again")
    return first


# --- publishing --------------------------------------------------------------------------


async def _emit_pipelined(batches: list[PreparedBatch]) -> list[int | Exception]:
    """Run the numbering script once per batch, in order, in one pipeline. Per-batch
    outcomes: the first seq, or the error of that batch.

    Every batch of an event loop goes through here (`publish_async`): while one pipeline is
    on the wire the next batches gather, so the busier the loop, the more each round trip
    carries (the per-command cost of redis-py dominated the worker's CPU when each turn sent
    its own; decision 012)."""
    outcomes: list[int | Exception] = []
    for result in await _run_async(batches):
        try:
            outcomes.append(_first_seq(result))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def publish(session_id: str, events: Sequence[Event]) -> list[str]:
    """Number, log and fan out events in one Redis call (sync; services, on commit).
    Returns the frames as sent."""
    return publish_many([(session_id, events)])[0]


# How long a publish after a commit keeps trying while Redis is unreachable (a restart
# takes a second or two): the events of what was committed must not be lost to a blip.
PUBLISH_RETRY_SECONDS = 10.0


def publish_many(batches: Sequence[tuple[str, Sequence[Event]]]) -> list[list[str]]:
    """`publish` for the batches of many sessions, in order, in one pipeline (a group of
    sends, on commit). The frames of each batch; the first batch Redis refused raises.
    While Redis is unreachable it tries again, for up to PUBLISH_RETRY_SECONDS."""
    sent = [i for i, (_, events) in enumerate(batches) if events]
    if not sent:
        return [[] for _ in batches]
    prepared = [prepare(*batches[i]) for i in sent]
    deadline = time.monotonic() + PUBLISH_RETRY_SECONDS
    pause = 0.05
    while True:
        try:
            results = _run_sync(prepared)
            break
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("publishing events: Redis is unreachable; trying again in %.2f s", pause)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
    frames: list[list[str]] = [[] for _ in batches]
    for i, batch, result in zip(sent, prepared, results, strict=True):
        frames[i] = frames_for(_first_seq(result), batch.bodies)
    return frames


async def publish_async(
    session_id: str, events: Sequence[Event], *, floor: int = 0, live: LiveWrites | None = None
) -> list[str]:
    """Number, log and fan out events (async; the worker's hot path), pipelined with the
    other batches of this event loop. Returns the frames as sent. `floor` and `live`: see
    `prepare`."""
    if not events:
        return []
    batch = prepare(session_id, events, floor=floor, live=live)
    return frames_for(await _publisher().call(batch), batch.bodies)


_last_publisher: tuple[asyncio.AbstractEventLoop | None, GroupedCall[PreparedBatch, int] | None] = (None, None)


def _publisher() -> GroupedCall[PreparedBatch, int]:
    """The running loop's publisher (every batch of the worker's loop asks: the loop it
    asked for last is kept at hand)."""
    global _last_publisher
    loop = asyncio.get_running_loop()
    known_loop, known = _last_publisher
    if known_loop is loop and known is not None:
        return known
    publisher = grouped("publish", lambda: GroupedCall(_emit_pipelined, max_batch=None))
    _last_publisher = (loop, publisher)
    return publisher


def start_numbering_sync(session_id: str) -> None:
    """A new session's numbering starts at 1 (a session whose counter is missing later
    lost it: see _NUMBERING_LUA). Best effort: without it the numbering starts higher."""
    try:
        sync_redis().set(Keys.seq(session_id), 0, nx=True, ex=int(app_settings.EVENT_LOG_TTL_SECONDS))
    except RedisError:
        logger.warning("session %s: could not start its numbering in Redis", session_id, exc_info=True)


async def renumber_above(session_id: str, floor: int) -> int:
    """Move a session's numbering above `floor`, a seq a reader saw, if Redis lost it (see
    _RENUMBER_LUA); the session's last seq."""
    batch = PreparedBatch(
        keys=[Keys.seq(session_id)], args=[floor, int(app_settings.EVENT_LOG_TTL_SECONDS)], script=RENUMBER
    )
    [result] = await _run_async([batch])
    return _first_seq(result)


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
    return live_contents_sync(session_id, [message_id])[message_id]


def live_contents_sync(session_id: str, message_ids: Sequence[str]) -> dict[str, LiveContent]:
    """`live_contents` from sync code, in one MGET: every key of a session carries its hash
    tag, so they share a slot, and a list page's answers cost one round trip, not one each.
    Nothing is asked when there is no answer to read."""
    if not message_ids:
        return {}
    values: list[Any] = sync_redis().mget([key for mid in message_ids for key in _live_keys(session_id, mid)])  # type: ignore[assignment]
    width = len(LIVE_PARTS) + 1
    return {mid: _live_content_from(values[i * width : (i + 1) * width]) for i, mid in enumerate(message_ids)}


def expire_live_content_sync(session_id: str, message_id: str, seconds: int = 600) -> None:
    """Keep a settled answer's live buffer a while: a snapshot racing the turn's end reads it."""
    expire_live_contents_sync([(session_id, message_id)], seconds)


def expire_live_contents_sync(answers: Sequence[tuple[str, str]], seconds: int = 600) -> None:
    """`expire_live_content_sync` for many (session, answer) pairs in one round trip."""
    if not answers:
        return
    pipe = sync_redis().pipeline(transaction=False)
    _expire_live(pipe, answers, seconds)
    pipe.execute()


async def expire_live_content(session_id: str, message_id: str, seconds: int = 600) -> None:
    """`expire_live_content_sync` from async code."""
    pipe = async_redis().pipeline(transaction=False)
    _expire_live(pipe, [(session_id, message_id)], seconds)
    await pipe.execute()


def _expire_live(pipe: Any, answers: Sequence[tuple[str, str]], seconds: int) -> None:
    for session_id, message_id in answers:
        for key in _live_keys(session_id, message_id):
            pipe.expire(key, seconds)


# --- a deleted session ----------------------------------------------------------------------
#
# Its numbering and log outlive it this long: a reader woken by its last event
# (`session.deleted`: a web process reading a gap, the Ably mirror) still finds it there.
DELETED_SESSION_LOG_SECONDS = 60


def _forget_session(pipe: Any, session_id: str, message_ids: Sequence[str]) -> None:
    keys = [Keys.presence(session_id), Keys.online(session_id)]
    keys += [key for message_id in message_ids for key in _live_keys(session_id, message_id)]
    for start in range(0, len(keys), 1000):
        pipe.delete(*keys[start : start + 1000])  # one hash tag: one slot, on a cluster too
    pipe.expire(Keys.seq(session_id), DELETED_SESSION_LOG_SECONDS)
    pipe.expire(Keys.log(session_id), DELETED_SESSION_LOG_SECONDS)


def forget_session_sync(session_id: str, message_ids: Sequence[str]) -> None:
    """A deleted session's state: the live buffers of its answers (`message_ids`), its
    presence and online list go now; its numbering and log expire after
    DELETED_SESSION_LOG_SECONDS. One round trip."""
    pipe = sync_redis().pipeline(transaction=False)
    _forget_session(pipe, session_id, message_ids)
    pipe.execute()


async def forget_session(session_id: str, message_ids: Sequence[str]) -> None:
    """`forget_session_sync` from async code: a worker that stopped a turn of a deleted
    session, after its last publish (which may have written those keys again)."""
    pipe = async_redis().pipeline(transaction=False)
    _forget_session(pipe, session_id, message_ids)
    await pipe.execute()


def offer_turns_sync(turn_pks: Sequence[int]) -> bool:
    """Offer a set of turns to the workers waiting for work (`take_offered_turns`); whether
    one took it. One round trip: Redis hands a pushed element to a client blocked on the
    list as soon as the push has run, before the next command of the pipeline (not inside
    MULTI or a script), so the LREM takes the offer back only if no worker was waiting."""
    key = Keys.offered_turns()
    offer = orjson.dumps(list(turn_pks)).decode()
    pipe = sync_redis().pipeline(transaction=False)
    pipe.rpush(key, offer)
    pipe.lrem(key, 1, offer)
    _pushed, taken_back = pipe.execute()
    return not taken_back


async def take_offered_turns(wait_seconds: float) -> list[int] | None:
    """The oldest offered set of turns, waiting up to `wait_seconds` for one; None if none."""
    popped = await async_redis().blpop([Keys.offered_turns()], timeout=wait_seconds)
    return None if popped is None else [int(pk) for pk in orjson.loads(popped[1])]


def signal_cancel_sync(session_id: str, turn_pks: Sequence[int]) -> None:
    """Tell every worker which turns to abort (a worker acts on the ones it runs)."""
    signal_cancels_sync([(session_id, turn_pks)])


def signal_cancels_sync(signals: Sequence[tuple[str, Sequence[int]]], *, deleted: bool = False) -> None:
    """`signal_cancel_sync` for many sessions' turns, one message each, in one round trip;
    `deleted`: their sessions were deleted (the workers publish nothing more for those
    turns, and end nothing)."""
    payloads = _cancel_signals(signals, deleted=deleted)
    if len(payloads) == 1:
        sync_redis().publish(Keys.cancel_channel(), payloads[0])
    elif payloads:
        pipe = sync_redis().pipeline(transaction=False)
        for payload in payloads:
            pipe.publish(Keys.cancel_channel(), payload)
        pipe.execute()


def publish_then_signal(
    batches: Sequence[tuple[str, Sequence[Event]]], signals: Sequence[tuple[str, Sequence[int]]]
) -> Callable[[], list[list[str]]]:
    """`publish_many`, then `signal_cancels_sync`, written now as one pipeline without
    waiting for the replies (a reply costs a thread ~0.5 ms on a small machine: decision
    038): returns the call that reads them and gives each batch's frames, to be made once,
    later. Redis runs a connection's commands in order, so the events are
    numbered before any worker hears the signals: the `turn.end` a worker publishes for a
    turn it stops comes after the events of the command that stopped it (its `cancel`, an
    interrupting send's `message` and `turn.queued`). The script goes by EVAL, not EVALSHA:
    a Redis that lost its scripts would refuse the events and still carry the signals.
    Where the writing fails, the two go one after the other through the client (which
    reconnects and retries); where the reading fails, the events are published again and
    the signals sent again (a worker stops a turn once, however often it hears the signal)."""
    prepared = [prepare(session_id, events) for session_id, events in batches if events]
    payloads = _cancel_signals(signals)
    pool = sync_redis().connection_pool
    connection = pool.get_connection()
    channel = Keys.cancel_channel()
    commands: list[tuple[Any, ...]] = [
        ("EVAL", batch.script.text, len(batch.keys), *batch.keys, *batch.args) for batch in prepared
    ]
    commands += [("PUBLISH", channel, payload) for payload in payloads]
    try:
        connection.send_packed_command(connection.pack_commands(commands))
    except RedisError:
        pool.release(connection)
        return _published_then_signalled(batches, signals)

    def read_replies() -> list[list[str]]:
        firsts: list[int] = []
        try:
            for _ in prepared:
                firsts.append(_first_seq(connection.read_response()))
            for _ in payloads:
                connection.read_response()
        except RedisError:
            connection.disconnect()
            pool.release(connection)
            return _published_then_signalled(batches, signals)()
        pool.release(connection)
        frames = iter([frames_for(first, batch.bodies) for first, batch in zip(firsts, prepared, strict=True)])
        return [next(frames) if events else [] for _, events in batches]

    return read_replies


def _published_then_signalled(
    batches: Sequence[tuple[str, Sequence[Event]]], signals: Sequence[tuple[str, Sequence[int]]]
) -> Callable[[], list[list[str]]]:
    """`publish_then_signal`'s way when its own write fails: through the client, in order."""
    frames = publish_many(batches)
    signal_cancels_sync(signals)
    return lambda: frames


def _cancel_signals(signals: Sequence[tuple[str, Sequence[int]]], *, deleted: bool = False) -> list[bytes]:
    """The messages telling the workers to abort turns: one per session with turns to stop."""
    at, marked = now_ms(), {"deleted": True} if deleted else {}
    return [orjson.dumps({"session": s, "turns": list(pks), "at": at} | marked) for s, pks in signals if pks]


# --- presence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresenceState:
    """A session's online clientIds after a process stated its own, and the frames of the
    `presence` event that announced a change (none if nothing changed)."""

    online: list[str]
    frames: list[str]


async def state_presence(
    process: str, sessions: Mapping[str, Sequence[str]], lease_seconds: float
) -> list[PresenceState]:
    """State, for each session, the clientIds this process has devices of (all of them,
    not a change: stating again is harmless, and restores what Redis lost), held for
    `lease_seconds`; entries of processes whose lease ran out are dropped. One pipeline."""
    calls = [
        PreparedBatch(
            keys=[
                Keys.seq(session_id),
                Keys.log(session_id),
                Keys.events_channel(session_id),
                Keys.presence(session_id),
                Keys.online(session_id),
            ],
            args=[
                app_settings.EVENT_LOG_MAXLEN,
                int(app_settings.EVENT_LOG_TTL_SECONDS),
                max(int(lease_seconds * 1000), 1),
                process,
                *sorted(clients),
            ],
            script=PRESENCE,
        )
        for session_id, clients in sessions.items()
    ]
    states = []
    for result in await _run_async(calls):
        if isinstance(result, Exception):
            raise result
        online, first, body = result
        frames = frames_for(int(first), [body]) if int(first) else []
        states.append(PresenceState(online=orjson.loads(online), frames=frames))
    return states


async def online(session_id: str) -> list[str]:
    """The clientIds last announced online in the session."""
    value = await async_redis().get(Keys.online(session_id))
    return list(orjson.loads(value)) if value else []
