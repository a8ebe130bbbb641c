"""All reads: lists, details, the snapshot a device starts from, and what a resuming
device missed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from sessions_app.errors import Invalid, NotFound
from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall, grouped
from sessions_app.infra.db_threads import db
from sessions_app.models import (
    IN_FLIGHT,
    ChatSession,
    EventRecord,
    MessageNode,
    NodeStatus,
    Turn,
    TurnStatus,
    node_payload,
    oldest_first,
)
from sessions_app.schemas import json_safe
from sessions_app.sessions._queries import active_turn_ids, session_exists, session_rows, turns_with_messages


def sessions_for_user(*, user: AbstractBaseUser) -> QuerySet[ChatSession]:
    return ChatSession.objects.filter(memberships__user_id=user.pk).select_related("owner").order_by("-updated_at")


def active_turns_map(*, session_id: str) -> dict[str, list[str]]:
    """clientId -> [turnId] of the session's active turns."""
    return _by_client(active_turn_ids(session_id))


def _by_client(turns: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """clientId -> [turnId] of (clientId, turnId) pairs, in their order."""
    result: dict[str, list[str]] = {}
    for client_id, turn_id in turns:
        result.setdefault(client_id, []).append(turn_id)
    return result


def turn_payload(turn: Turn, *, content: str | None = None) -> dict[str, Any]:
    return {
        "turnId": turn.turn_id,
        "clientId": turn.client_id,
        "status": turn.status,
        "reason": turn.reason,
        "error": {"code": turn.error_code, "message": turn.error_message} if turn.error_code else None,
        "policy": turn.policy,
        "model": turn.model,
        "userMessageId": turn.user_message.node_id if turn.user_message else None,
        "assistantMessageId": turn.assistant_message.node_id if turn.assistant_message else None,
        "content": content if content is not None else (turn.assistant_message.text if turn.assistant_message else ""),
        "usage": turn.usage or None,
        "finishReason": turn.finish_reason or None,
        "cancelledBy": (turn.cancel_requested_by or None) if turn.status == TurnStatus.CANCELLED else None,
        "createdAt": int(turn.created_at.timestamp() * 1000),
        "endedAt": int(turn.ended_at.timestamp() * 1000) if turn.ended_at else None,
        "parentTurnId": turn.parent_turn.turn_id if turn.parent_turn_id and turn.parent_turn else None,
    }


def session_payload(session: ChatSession, *, detail: bool = False) -> dict[str, Any]:
    return _session_detail(session) if detail else _summary(session, session.owner.get_username())


def _summary(session: ChatSession, owner: str) -> dict[str, Any]:
    return {
        "id": str(session.pk),
        "title": session.title,
        "owner": owner,
        "model": session.model,
        "modelOptions": json_safe(session.model_options),  # stored before the checks existed
        "policy": session.policy,
        "createdAt": int(session.created_at.timestamp() * 1000),
        "updatedAt": int(session.updated_at.timestamp() * 1000),
        "agents": list(session.agents or []),
    }


def _session_detail(session: ChatSession) -> dict[str, Any]:
    """A session with its members, last seq and in-flight turns: two reads (its members,
    the owner's name among them; its turns in flight, the active ones mapped by clientId
    from them), the seq from Redis, and with turns active, what they have streamed."""
    username = f"user__{get_user_model().USERNAME_FIELD}"
    members = list(session.memberships.values_list("user_id", "user__username", username))
    owner = next((name for user_id, _, name in members if user_id == session.owner_id), None)
    in_flight = oldest_first(turns_with_messages(session.pk, statuses=IN_FLIGHT))
    active = [t for t in in_flight if t.status == TurnStatus.ACTIVE]
    return _summary(session, owner if owner is not None else session.owner.get_username()) | {
        "lastSeq": live_state.last_seq_sync(str(session.pk)),
        "members": [member for _, member, _ in members],
        "activeTurns": _by_client((t.client_id, t.turn_id) for t in active),
        "turns": _with_streamed_content(session, active),
        "queuedTurns": [turn_payload(t) for t in in_flight if t.status == TurnStatus.QUEUED],
    }


def new_session_payload(session: ChatSession) -> dict[str, Any]:
    """A session `session_create` has just made, as `session_payload(detail=True)` shows
    it, from what the creation wrote: its owner the one member, nothing sent yet (no seq, no
    turns). Nobody else knows its id before this answer, so nothing can have changed it;
    the three reads and the Redis round trip of a detail are skipped."""
    return _summary(session, session.owner.get_username()) | {
        "lastSeq": 0,
        "members": [session.owner.get_username()],
        "activeTurns": {},
        "turns": [],
        "queuedTurns": [],
    }


def turns_list(*, session: ChatSession, status: str | None) -> list[dict[str, Any]]:
    if status and status not in TurnStatus.values:
        raise Invalid(f"status is one of {', '.join(TurnStatus.values)}")
    return _with_streamed_content(session, turns_with_messages(session.pk, statuses=[status] if status else []))


def turn_detail(*, session: ChatSession, turn_id: str) -> dict[str, Any]:
    found = turns_with_messages(session.pk, turn_id=turn_id)
    if not found:
        raise NotFound(f"no turn {turn_id!r} in this session")
    [payload] = _with_streamed_content(session, found)
    return payload


def _with_streamed_content(session: ChatSession, turns: list[Turn]) -> list[dict[str, Any]]:
    """The turns' payloads, an active turn's `content` the text its answer has streamed so
    far (the database holds an answer's text only once it ends), as a snapshot shows it:
    one Redis read for them all, none when no turn is active."""
    streaming = [t.assistant_message.node_id for t in turns if t.status == TurnStatus.ACTIVE and t.assistant_message]
    live = live_state.live_contents_sync(str(session.pk), streaming)
    return [turn_payload(turn, content=_streamed_text(turn, live)) for turn in turns]


def _streamed_text(turn: Turn, live: Mapping[str, live_state.LiveContent]) -> str | None:
    """The text a turn's answer has streamed so far, if it is streaming (in `live`)."""
    streamed = live.get(turn.assistant_message.node_id) if turn.assistant_message else None
    return "".join(p["text"] for p in streamed.parts if p["type"] == "text") if streamed else None


def _nodes(session: ChatSession) -> QuerySet[MessageNode]:
    return MessageNode.objects.filter(session=session).select_related("parent", "fork_of", "turn")


def node_dict(node: MessageNode) -> dict[str, Any]:
    return node_payload(node, turn_id=node.turn.turn_id if node.turn else None)


def messages_page(*, session: ChatSession, before: str | None, limit: int) -> dict[str, Any]:
    """Tree nodes, newest first; `before` is a message id, the cursor of the next page."""
    nodes = _nodes(session).order_by("-id")
    if before:
        anchor = MessageNode.objects.filter(session=session, node_id=before).first()
        if anchor is None:
            raise NotFound(f"no message {before!r} in this session")
        nodes = nodes.filter(id__lt=anchor.pk)
    page = list(nodes[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return {"results": _with_live_parts(str(session.pk), page), "next": page[-1].node_id if more and page else None}


def _with_live_parts(session_id: str, nodes: list[MessageNode]) -> list[dict[str, Any]]:
    """The nodes' payloads, an answer still streaming with its parts so far and their
    `contentSeq` from the live buffer, as a snapshot shows it (the database holds its parts
    only once it ends): one Redis read for the page, none when nothing on it streams."""
    return _node_payloads(nodes, live_state.live_contents_sync(session_id, _streaming(nodes)))


def _node_payloads(nodes: list[MessageNode], live: Mapping[str, live_state.LiveContent]) -> list[dict[str, Any]]:
    """The nodes' payloads, those streaming (in `live`) with their parts so far and the
    `contentSeq` of those parts."""
    payloads = []
    for node in nodes:
        payload = node_dict(node)
        if node.node_id in live:
            payload["parts"], payload["contentSeq"] = live[node.node_id].parts, live[node.node_id].content_seq
        payloads.append(payload)
    return payloads


def _streaming(nodes: list[MessageNode]) -> list[str]:
    return [n.node_id for n in nodes if n.role == "assistant" and n.status == NodeStatus.STREAMING]


def _archived_frames(session_id: str, after: int, *, before: int | None = None, limit: int | None = None) -> list[str]:
    """The archived frames with seq above `after` (and below `before`), in order, at most
    `limit`: an events page's, or what a resume misses from the live log."""
    frames = EventRecord.objects.filter(session_id=uuid.UUID(session_id), seq__gt=after)
    if before is not None:
        frames = frames.filter(seq__lt=before)
    return list(frames.order_by("seq").values_list("frame", flat=True)[:limit])


def events_page(*, session: ChatSession, after: int, limit: int) -> dict[str, Any]:
    """Events with seq > after from the live log, or the archive for older ones."""
    session_id = str(session.pk)
    last = live_state.last_seq_sync(session_id)
    frames = live_state.read_log_sync(session_id, after, limit)
    if not frames or live_state.seq_of(frames[0]) != after + 1:
        # Older than the live log: the archive, up to where the log starts, then the log's
        # own events, deltas included.
        first_live = live_state.seq_of(frames[0]) if frames else None
        archived = _archived_frames(session_id, after, before=first_live, limit=limit)
        frames = (archived + frames)[:limit]
    return {"events": [orjson.loads(f) for f in frames], "lastSeq": last}


# --- the websocket's start: snapshot or resume -------------------------------------------


SnapshotRows = tuple[list[MessageNode], list[Turn], dict[str, list[str]]]


def snapshot_rows(*, session_id: str) -> SnapshotRows:
    """A session's messages and turns in creation order, and its active turns by clientId;
    ChatSession.DoesNotExist if there is no such session."""
    if not session_exists(session_id):
        raise ChatSession.DoesNotExist(f"no session {session_id}")
    nodes, turns = session_rows(session_id)
    return nodes, turns, _by_client((t.client_id, t.turn_id) for t in turns if t.status == TurnStatus.ACTIVE)


async def snapshot_rows_shared(session_id: str) -> SnapshotRows:
    """`snapshot_rows` for a device that connects now. Devices connecting meanwhile share
    the read: those that asked while one read ran get the next, one read per session (a
    shared session's page opened on a hundred screens reads it a handful of times, not a
    hundred). Each read starts after its devices asked, and each device read its `lastSeq`
    before asking, so the rows still hold everything up to it. The rows are shared: read
    them, never change them."""
    return await grouped("snapshot-rows", lambda: GroupedCall.on_thread(_snapshot_rows_of)).call(session_id)


def _snapshot_rows_of(session_ids: list[str]) -> list[SnapshotRows | Exception]:
    found: dict[str, SnapshotRows | Exception] = {}
    for session_id in dict.fromkeys(session_ids):
        try:
            found[session_id] = snapshot_rows(session_id=session_id)
        except ChatSession.DoesNotExist as exc:
            found[session_id] = exc
    return [found[session_id] for session_id in session_ids]


async def build_snapshot(
    *, session_id: str, last_seq: int, nodes: list[MessageNode], turns: list[Turn]
) -> dict[str, Any]:
    """The snapshot frame. `last_seq` was read before the rows, so the rows hold at least
    everything up to it. Answers still streaming take their text from the live buffer,
    each with `contentSeq` (the seq of its last delta): a client skips a delta for that
    message whose seq is not above it, so nothing shows twice."""
    live_content = await live_state.live_contents(session_id, _streaming(nodes))
    return {
        "type": "snapshot",
        "lastSeq": last_seq,
        "messages": _node_payloads(nodes, live_content),
        "turns": [turn_payload(t, content=_streamed_text(t, live_content)) for t in turns],
    }


async def missed_frames(*, session_id: str, after: int, last_seq: int) -> list[str] | None:
    """Frames after `after` up to `last_seq`, or None when they are no longer all kept (the
    client then gets a snapshot)."""
    if after > last_seq:
        return None  # the client knows a future we don't (Redis was reset): start afresh
    if after == last_seq:
        return []
    frames = await live_state.read_log(session_id, after, last_seq)
    first_kept = live_state.seq_of(frames[0]) if frames else last_seq + 1
    if first_kept != after + 1:
        older = await db(_archived_frames)(session_id, after, before=first_kept)
        if len(older) != first_kept - after - 1:
            return None
        frames = older + frames
    if not frames or live_state.seq_of(frames[-1]) != last_seq:
        return None
    return frames
