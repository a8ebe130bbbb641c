"""Our events (docs/protocol.md) as `@ably/ai-transport` 0.8 messages (docs/ably.md has
the full table). Pure: `SessionTranslator.apply` turns one event into the operations the
writer performs, and keeps what it must remember between events (the turns in flight, their
open streams); it does no I/O.

- a user `message` → one `ai-input` per text part, under the author's clientId;
- `turn.start` → `ai-run-start` (run-id = turnId, run-client-id = the turn's clientId);
- an answer → `ai-output` messages: `start` and `start-step`, then each streamed part
  (text or reasoning) as one message opened with `status: streaming` and grown by appends
  (the writer coalesces deltas into them), tool calls and results as the Vercel codec's
  `tool-input` and `tool-output-*`;
- `turn.end` → the open stream closed (`complete` or `cancelled`), `finish-step` and
  `finish` (or an `error` output), then `ai-run-end` with `run-reason`.

Parts are numbered as the worker numbers them (a new part when the kind changes or after a
tool part), so an answer whose deltas were lost can be rewritten whole from its saved parts.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

INPUT, OUTPUT, RUN_START, RUN_END, CANCEL = "ai-input", "ai-output", "ai-run-start", "ai-run-end", "ai-cancel"
# Our extension headers (documented in docs/ably.md).
ERROR_NAME_HEADER = "chat-error-code"  # our error code, next to Ably's numeric error-code
PARENT_TURN_HEADER = "chat-parent-turn-id"  # a sub-agent's turn: the turn it works for
CANCEL_FILTER_HEADER = "cancel-filter"  # on ai-cancel: one of our filters, as JSON

# Ably error codes encode an HTTP status in their first three digits; ours are names.
ERROR_CODES = {
    "provider_auth": 50201,
    "provider_rate_limited": 42901,
    "provider_unavailable": 50301,
    "provider_timeout": 50401,
    "provider_bad_request": 40001,
    "provider_bad_response": 50202,
    "model_not_configured": 40401,
    "tool_rounds_exceeded": 50002,
    "worker_lost": 50302,
    "internal": 50000,
}

USER_MESSAGES_KEPT = 200  # per session, for the runs that answer them

StreamKind = Literal["text", "reasoning"]
Status = Literal["streaming", "complete", "cancelled"]


@dataclass
class OutMessage:
    """One Ably message to publish (a create)."""

    id: str  # stable: a retry is deduplicated by Ably's idempotent publishing
    name: str
    transport: dict[str, str]
    codec: dict[str, str] | None = None
    data: Any = None
    client_id: str | None = None

    def extras(self) -> dict[str, Any]:
        ai: dict[str, Any] = {"transport": self.transport}
        if self.codec:
            ai["codec"] = self.codec
        return {"ai": ai}


@dataclass
class Stream:
    """One streamed `ai-output` (a text or reasoning part of an answer)."""

    turn_id: str
    index: int  # the part's position in the answer
    kind: StreamKind
    message_id: str
    opened_seq: int
    transport: dict[str, str]  # repeated on every append: an append replaces extras
    codec: dict[str, str]
    serial: str | None = None  # Ably's, once the create is published
    confirmed_seq: int = 0  # seq of the last delta that is on Ably
    status: Status = "streaming"
    # Not kept across restarts (read again from the log):
    pending: str = field(default="", repr=False)  # text read, not appended yet
    pending_seq: int = 0  # seq of the last delta in `pending`
    sent: str = field(default="", repr=False)  # the text on Ably
    needs_replace: bool = False  # Ably's copy is uncertain: set it whole (an update) next

    @property
    def key(self) -> str:
        return f"{self.turn_id}/{self.index}"

    def headers(self, status: Status) -> dict[str, Any]:
        return {"ai": {"transport": {**self.transport, "status": status}, "codec": dict(self.codec)}}


@dataclass
class Turn:
    """What the translator knows of a turn in flight."""

    turn_id: str
    client_id: str
    user_message_id: str | None = None
    user_client_id: str | None = None
    user_fork_of: str | None = None
    assistant_id: str | None = None
    regenerates: str | None = None
    parent_turn_id: str | None = None
    run_started: bool = False
    output_started: bool = False
    part: int = -1  # index of the answer's current part
    part_kind: str | None = None  # "text" | "reasoning" | "tool"
    streams: dict[int, Stream] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)  # ids of tool parts published
    dirty: bool = False  # deltas were lost: rewrite the answer whole at its end
    reason: str | None = None  # set by turn.end
    error_code: str | None = None
    error_message: str | None = None

    def open_stream(self) -> Stream | None:
        stream = self.streams.get(self.part)
        return stream if stream is not None and stream.status == "streaming" else None


# --- operations -----------------------------------------------------------------------------


@dataclass
class Publish:
    """Create messages (one request); `opens[i]`: the stream message i opens (the writer
    records its serial)."""

    messages: list[OutMessage]
    opens: dict[int, Stream] = field(default_factory=dict)
    turn_id: str | None = None  # flush this turn's pending text first


@dataclass
class Close:
    """End a stream: its pending text and the final status in one append."""

    stream: Stream
    status: Status


@dataclass
class Republish:
    """The answer lost deltas: rewrite it whole from its saved parts (`rewrite`), then end
    it (`ending`). `tag` makes the ids of what it publishes stable."""

    turn: Turn
    tag: str


Op = Publish | Close | Republish


# --- the translator -------------------------------------------------------------------------


class SessionTranslator:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.turns: dict[str, Turn] = {}
        # The newest user messages: id -> (author's clientId, forkOf), for the runs that answer
        # them (an agent may answer an older one).
        self.user_nodes: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.in_gap = False  # replaying archived events: the deltas between them are gone

    def apply(self, event: dict[str, Any]) -> list[Op]:
        seq, kind = int(event["seq"]), event["type"]
        if kind == "message":
            return self._message(seq, event["message"])
        if kind == "turn.start":
            turn = self._turn(event)
            if self.in_gap:
                turn.dirty = True
            return self._run_start(seq, turn)
        if kind == "turn.queued":
            self._turn(event)
            return []
        if kind == "delta":
            return self._delta(seq, event)
        if kind in ("tool.call", "tool.result"):
            return self._tool(seq, event)
        if kind == "turn.end":
            return self._end(seq, event)
        if kind == "session.deleted":
            return self._deleted(seq)
        return []  # cancel, presence, session and member events: nothing a stock client needs

    def mark_gap(self) -> None:
        """Events were lost: the answers in flight cannot be followed part by part."""
        for turn in self.turns.values():
            turn.dirty = True

    def take_delta(self, event: dict[str, Any]) -> None:
        """A delta of an open stream read again after a restart (the state was saved with
        the stream open): rebuild the stream's text, sent and pending."""
        turn = self.turns.get(event["turnId"])
        stream = turn.open_stream() if turn else None
        seq = int(event["seq"])
        kind = "reasoning" if event.get("part") == "reasoning" else "text"
        if stream is None or stream.kind != kind or seq < stream.opened_seq:
            return
        if seq <= stream.confirmed_seq:
            stream.sent += event["text"]
        elif seq > stream.pending_seq:
            stream.pending += event["text"]
            stream.pending_seq = seq

    # --- events ---------------------------------------------------------------------------

    def _turn(self, event: dict[str, Any]) -> Turn:
        turn = self.turns.get(event["turnId"])
        if turn is None:
            turn = self.turns[event["turnId"]] = Turn(turn_id=event["turnId"], client_id=event["clientId"])
        turn.parent_turn_id = event.get("parentTurnId") or turn.parent_turn_id
        return turn

    def _message(self, seq: int, node: dict[str, Any]) -> list[Op]:
        if node["role"] == "user":
            self.user_nodes[node["id"]] = (node["clientId"], node.get("forkOf"))
            while len(self.user_nodes) > USER_MESSAGES_KEPT:
                self.user_nodes.popitem(last=False)
            return [Publish(self._inputs(node))]
        if node["role"] == "assistant" and node.get("turnId"):
            turn = self._turn({"turnId": node["turnId"], "clientId": node["clientId"]})
            if turn.assistant_id is None:
                turn.assistant_id = node["id"]
                turn.user_message_id = node.get("parent")
                turn.regenerates = node.get("forkOf")
                author = self.user_nodes.get(node.get("parent") or "")
                turn.user_client_id = author[0] if author else node["clientId"]
                turn.user_fork_of = author[1] if author else None
        return []

    def _inputs(self, node: dict[str, Any]) -> list[OutMessage]:
        transport = {"role": "user", "codec-message-id": node["id"], "run-client-id": node["clientId"]}
        if node.get("parent"):
            transport["parent"] = node["parent"]
        if node.get("forkOf"):
            transport["fork-of"] = node["forkOf"]
        transport.update({"event-id": node["id"], "stream": "false", "discrete": "true"})
        texts = [p.get("text", "") for p in node.get("parts") or [] if p.get("type") == "text"] or [""]
        return [
            OutMessage(
                id=f"{self.session_id}:in:{node['id']}:{index}",
                name=INPUT,
                transport=dict(transport),
                codec={"kind": "user-message", "messageId": node["id"], "partType": "text"},
                data=text,
                client_id=node["clientId"],
            )
            for index, text in enumerate(texts)
        ]

    def _lifecycle(self, turn: Turn, *, start: bool) -> dict[str, str]:
        headers = {"run-id": turn.turn_id, "run-client-id": turn.client_id}
        if start:
            if turn.user_message_id:
                headers["parent"] = turn.user_message_id
            if turn.user_fork_of:
                headers["fork-of"] = turn.user_fork_of
            if turn.regenerates:
                headers["msg-regenerate"] = turn.regenerates
        headers["invocation-id"] = turn.turn_id
        if turn.parent_turn_id:
            headers[PARENT_TURN_HEADER] = turn.parent_turn_id
        if turn.user_client_id:
            headers["input-client-id"] = turn.user_client_id
        if turn.user_message_id:
            headers["input-codec-message-id"] = turn.user_message_id
        return headers

    def _run_start(self, seq: int | str, turn: Turn) -> list[Op]:
        if turn.run_started:
            return []
        turn.run_started = True
        message = OutMessage(
            id=f"{self.session_id}:{seq}:run", name=RUN_START, transport=self._lifecycle(turn, start=True)
        )
        return [Publish([message], turn_id=turn.turn_id)]

    def _output(self, turn: Turn, message_id: str, codec: dict[str, str], data: Any = "", **extra: str) -> OutMessage:
        transport = {
            "role": "assistant",
            "codec-message-id": turn.assistant_id or turn.turn_id,
            "run-id": turn.turn_id,
            "run-client-id": turn.client_id,
        }
        for name, value in self._lifecycle(turn, start=True).items():
            transport.setdefault(name, value)
        transport.update(extra)
        return OutMessage(id=message_id, name=OUTPUT, transport=transport, codec=codec, data=data)

    def _begin_output(self, tag: str, turn: Turn) -> list[OutMessage]:
        """`start` and `start-step`, before the answer's first content."""
        if turn.output_started:
            return []
        turn.output_started = True
        start = {"kind": "start", "messageId": turn.assistant_id or turn.turn_id}
        return [
            self._output(turn, f"{self.session_id}:{tag}:start", start, stream="false"),
            self._output(turn, f"{self.session_id}:{tag}:step", {"kind": "start-step"}, stream="false"),
        ]

    def _open(self, turn: Turn, message_id: str, kind: StreamKind, index: int, seq: int) -> tuple[OutMessage, Stream]:
        """The create of a streamed part, and the stream it starts."""
        stream_id = f"{turn.assistant_id or turn.turn_id}:{index}"
        opening = self._output(turn, message_id, {"kind": kind, "id": stream_id}, stream="true", status="streaming")
        opening.transport["stream-id"] = stream_id
        stream = Stream(
            turn_id=turn.turn_id,
            index=index,
            kind=kind,
            message_id=message_id,
            opened_seq=seq,
            transport={k: v for k, v in opening.transport.items() if k != "status"},
            codec=dict(opening.codec or {}),
        )
        turn.streams[index] = stream
        return opening, stream

    def _next_part(self, turn: Turn, kind: str) -> list[Op]:
        """Move to a new part of the answer, closing the stream of the previous one."""
        ops: list[Op] = []
        stream = turn.open_stream()
        if stream is not None:
            stream.status = "complete"
            ops.append(Close(stream, "complete"))
        turn.part += 1
        turn.part_kind = kind
        return ops

    def _delta(self, seq: int, event: dict[str, Any]) -> list[Op]:
        turn = self.turns.get(event["turnId"])
        if turn is None or turn.dirty or not event.get("text"):
            return []
        kind: StreamKind = "reasoning" if event.get("part") == "reasoning" else "text"
        ops: list[Op] = []
        if turn.part_kind != kind:
            ops.extend(self._next_part(turn, kind))
            begin = self._begin_output(str(seq), turn)
            opening, stream = self._open(turn, f"{self.session_id}:{seq}:open", kind, turn.part, seq)
            ops.append(Publish([*begin, opening], {len(begin): stream}, turn.turn_id))
        stream = turn.streams[turn.part]
        stream.pending += event["text"]
        stream.pending_seq = seq
        return ops

    def _tool(self, seq: int, event: dict[str, Any]) -> list[Op]:
        turn = self.turns.get(event["turnId"])
        if turn is None or turn.dirty:
            return []
        ops = self._next_part(turn, "tool")
        part = event["part"]
        message = self._tool_message(turn, f"{self.session_id}:{seq}:tool", part)
        turn.tools.append(_tool_key(part))
        ops.append(Publish([*self._begin_output(str(seq), turn), message], turn_id=turn.turn_id))
        return ops

    def _tool_message(self, turn: Turn, message_id: str, part: dict[str, Any]) -> OutMessage:
        if part["type"] == "tool-call":
            codec = {"kind": "tool-input", "toolCallId": part["id"], "toolName": part["name"]}
            return self._output(turn, message_id, codec, part.get("arguments") or {}, stream="false")
        if part.get("isError"):
            codec = {"kind": "tool-output-error", "toolCallId": part["id"]}
            error = part["result"] if isinstance(part["result"], str) else json.dumps(part["result"])
            return self._output(turn, message_id, codec, {"errorText": error}, stream="false")
        codec = {"kind": "tool-output-available", "toolCallId": part["id"]}
        return self._output(turn, message_id, codec, {"output": part["result"]}, stream="false")

    def _end(self, seq: int, event: dict[str, Any]) -> list[Op]:
        turn = self._turn(event)
        turn.reason = event["reason"]
        error = event.get("error") or {}
        turn.error_code, turn.error_message = error.get("code"), error.get("message")
        return self._ended(str(seq), turn)

    def _deleted(self, seq: int) -> list[Op]:
        """The session was deleted: its turns stopped, and no `turn.end` follows for them.
        Each run still open on the channel ends as a cancelled turn's does."""
        ops: list[Op] = []
        for index, turn in enumerate(list(self.turns.values())):
            turn.reason = "cancelled"
            ops.extend(self._ended(f"{seq}.{index}", turn))  # one tag per run: message ids stay unique
        return ops

    def _ended(self, tag: str, turn: Turn) -> list[Op]:
        ops: list[Op] = self._run_start(tag, turn)
        self.turns.pop(turn.turn_id, None)
        if turn.dirty:
            return [*ops, Republish(turn, tag)]
        stream = turn.open_stream()
        if stream is not None:
            stream.status = "cancelled" if turn.reason == "cancelled" else "complete"
            ops.append(Close(stream, stream.status))
        ops.append(Publish(self.ending(turn, tag), turn_id=turn.turn_id))
        return ops

    def ending(self, turn: Turn, tag: str) -> list[OutMessage]:
        """What ends a run: `finish-step` and `finish` (or an `error` output), `ai-run-end`."""
        messages: list[OutMessage] = []
        if turn.reason == "error":
            messages.extend(self._begin_output(tag, turn))
            error = turn.error_message or "the turn failed"
            messages.append(
                self._output(turn, f"{self.session_id}:{tag}:error", {"kind": "error"}, error, stream="false")
            )
        elif turn.reason == "complete" and turn.output_started:
            finish = {"kind": "finish", "finishReason": "stop"}
            messages.append(
                self._output(turn, f"{self.session_id}:{tag}:fstep", {"kind": "finish-step"}, stream="false")
            )
            messages.append(self._output(turn, f"{self.session_id}:{tag}:finish", finish, stream="false"))
        end = OutMessage(id=f"{self.session_id}:{tag}:end", name=RUN_END, transport=self._run_end_headers(turn))
        messages.append(end)
        return messages

    def _run_end_headers(self, turn: Turn) -> dict[str, str]:
        headers = self._lifecycle(turn, start=False)
        headers["run-reason"] = turn.reason or "complete"
        if turn.reason == "error":
            headers["error-code"] = str(ERROR_CODES.get(turn.error_code or "", 50000))
            headers["error-message"] = turn.error_message or "the turn failed"
            headers[ERROR_NAME_HEADER] = turn.error_code or "internal"
        return headers

    # --- rewriting an answer whole --------------------------------------------------------

    def rewrite(self, turn: Turn, parts: list[dict[str, Any]], tag: str) -> tuple[list[Op], list[tuple[Stream, str]]]:
        """What makes a dirty answer whole from its saved `parts`: the streams it never
        opened are opened, tool parts not published yet are published (the ops), and every
        stream gets its whole text (the pairs; the writer sets each with an update)."""
        messages: list[OutMessage] = []
        opens: dict[int, Stream] = {}
        texts: list[tuple[Stream, str]] = []
        final: Status = "cancelled" if turn.reason == "cancelled" else "complete"
        if parts:
            messages.extend(self._begin_output(tag, turn))
        for index, part in enumerate(parts):
            kind = part.get("type")
            if kind == "text" or kind == "reasoning":
                stream = turn.streams.get(index)
                if stream is None:
                    opening, stream = self._open(turn, f"{self.session_id}:{tag}:open:{index}", kind, index, 0)
                    opens[len(messages)] = stream
                    messages.append(opening)
                stream.status = final
                texts.append((stream, str(part.get("text", ""))))
            elif kind in ("tool-call", "tool-result") and _tool_key(part) not in turn.tools:
                turn.tools.append(_tool_key(part))
                messages.append(self._tool_message(turn, f"{self.session_id}:{tag}:tool:{index}", part))
        ops: list[Op] = [Publish(messages, opens, turn.turn_id)] if messages else []
        return ops, texts

    # --- keeping state across restarts ----------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "turns": {
                turn_id: {
                    **{k: v for k, v in asdict(turn).items() if k != "streams"},
                    "streams": [
                        {k: v for k, v in asdict(s).items() if k not in _NOT_SAVED}
                        for s in turn.streams.values()
                        if s.status == "streaming"
                    ],
                }
                for turn_id, turn in self.turns.items()
            },
            "users": {k: list(v) for k, v in self.user_nodes.items()},
        }

    def load(self, state: dict[str, Any]) -> None:
        for turn_id, data in (state.get("turns") or {}).items():
            # Ably may hold more of an open stream than was saved: set it whole first.
            streams = [Stream(**s, needs_replace=True) for s in data.pop("streams", [])]
            turn = Turn(**data)
            turn.streams = {s.index: s for s in streams}
            self.turns[turn_id] = turn
        self.user_nodes = OrderedDict((k, (v[0], v[1])) for k, v in (state.get("users") or {}).items())


_NOT_SAVED = ("pending", "pending_seq", "sent", "needs_replace")  # a stream's text: read again from the log


def _tool_key(part: dict[str, Any]) -> str:
    return f"{part['type']}:{part['id']}"
