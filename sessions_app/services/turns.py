"""Turns: sending (policies, the tree, idempotency), cancelling, and the turn state machine
(`queued` -> `active` -> complete/cancelled/error). Every transition is a conditional
update under the session's row lock, so two workers or two cancels can never both win."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from sessions_app import events, live, signals
from sessions_app.cancellation.core import CancelOutcome, cancel_locked, client_id_of, take_held_cancel
from sessions_app.conf import app_settings
from sessions_app.errors import Busy, Conflict, Invalid, NotFound, QueueFull, RateLimited, TooLarge
from sessions_app.live import Event
from sessions_app.models import (
    IN_FLIGHT,
    ChatSession,
    MessageNode,
    NodeStatus,
    Policy,
    Role,
    Turn,
    TurnStatus,
)
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.services.sessions import require_member
from sessions_app.tree import context_path, default_parent, session_nodes

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class SendResult:
    turn: Turn
    created: bool
    message_ids: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "turnId": self.turn.turn_id,
            "status": self.turn.status,
            "clientId": self.turn.client_id,
            "messageIds": self.message_ids,
            "userMessageId": self.turn.user_message.node_id if self.turn.user_message else None,
            "assistantMessageId": self.turn.assistant_message.node_id if self.turn.assistant_message else None,
        }


def _dispatch(turn_pk: int) -> None:
    from sessions_app.tasks import run_turn

    run_turn.delay(turn_pk)


def _announce(fn: Callable[[], None]) -> None:
    transaction.on_commit(fn)


def _check_rate(user: AbstractBaseUser) -> None:
    limit = int(app_settings.SENDS_PER_MINUTE)
    if limit <= 0:
        return
    window = int(time.time() // 60)
    key = live.Keys.rate(int(user.pk), window)
    pipe = live.sync_redis().pipeline()
    pipe.incr(key)
    pipe.expire(key, 120)
    count, _ = pipe.execute()
    if int(count) > limit:
        raise RateLimited(f"more than {limit} sends a minute; wait a moment")


def _check_sizes(body: SendBody) -> None:
    if len(body.messages) > app_settings.MAX_MESSAGES_PER_SEND:
        raise TooLarge(f"at most {app_settings.MAX_MESSAGES_PER_SEND} messages per send")
    for message in body.messages:
        if sum(len(p.text) for p in message.parts) > app_settings.MAX_MESSAGE_CHARS:
            raise TooLarge(f"a message holds at most {app_settings.MAX_MESSAGE_CHARS} characters")


def _node(session: ChatSession, node_id: str, what: str) -> MessageNode:
    node = MessageNode.objects.filter(session=session, node_id=node_id).select_related("parent").first()
    if node is None:
        raise NotFound(f"{what} {node_id!r} is not a message of this session")
    return node


def _parts(message: Any) -> list[dict[str, Any]]:
    return [p.model_dump() for p in message.parts]


def _existing(session: ChatSession, body: SendBody) -> SendResult | None:
    """The turn a repeated send already created, or None; Conflict if ids are reused for
    different content."""
    turn: Turn | None = None
    if body.turn_id:
        turn = (
            Turn.objects.filter(session=session, turn_id=body.turn_id)
            .select_related("user_message", "assistant_message__fork_of")
            .first()
        )
    ids = [m.id for m in body.messages]
    nodes = {n.node_id: n for n in MessageNode.objects.filter(session=session, node_id__in=ids)}
    if turn is None and not nodes:
        return None
    if turn is None:
        first = nodes[ids[0]] if ids[0] in nodes else next(iter(nodes.values()))
        turn = (
            Turn.objects.filter(pk=first.turn_id or 0)
            .select_related("user_message", "assistant_message__fork_of")
            .first()
        )
        if turn is None or first.role != Role.USER:
            raise Conflict("a message id of this send is already used")
    if body.regenerate:
        fork = turn.assistant_message.fork_of if turn.assistant_message else None
        if fork is None or fork.node_id != body.regenerate:
            raise Conflict(f"turnId {turn.turn_id!r} is already used by another send")
        return SendResult(turn=turn, created=False, message_ids=[])
    for message in body.messages:
        node = nodes.get(message.id)
        if node is None or node.turn_id != turn.pk or node.parts != _parts(message):
            raise Conflict("this send reuses an id of an earlier send with different content")
    if body.turn_id and body.turn_id != turn.turn_id:
        raise Conflict("these messages were sent with another turnId")
    return SendResult(turn=turn, created=False, message_ids=ids)


def turn_send(*, session_id: Any, user: AbstractBaseUser, body: SendBody) -> SendResult:
    """Start (or queue) a turn for the user's message(s), following the double-texting
    policy; a repeated send returns the turn it created the first time."""
    session = require_member(session_id=session_id, user=user)
    _check_sizes(body)
    _check_rate(user)
    for attempt in range(3):
        try:
            with transaction.atomic():
                return _send_locked(session, user, body, check_repeat=attempt > 0)
        except IntegrityError:
            # An id of this send exists already (a repeated send, or two racing): the next
            # pass, under the lock, returns the turn it names or reports the conflict.
            if attempt == 2:
                raise Conflict("this send conflicts with another one") from None
        except (Busy, QueueFull):
            if attempt > 0:
                raise
            # A refusal before any insert: it may be a repeat of a send that was accepted,
            # which must answer with its turn, so look again with the repeat check.
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class SendRequest:
    session_id: Any
    user: AbstractBaseUser
    body: SendBody


def turns_send(requests: Sequence[SendRequest]) -> list[SendResult | Exception]:
    """Many sends in one transaction, each in a savepoint of its own (the websocket
    consumers of a process send together what arrived meanwhile: grouping.py). One outcome
    per request, in order: its result or the error it alone raised."""
    return in_one_transaction(
        [partial(turn_send, session_id=r.session_id, user=r.user, body=r.body) for r in requests],
        lock_order=[str(r.session_id) for r in requests],
    )


def in_one_transaction(
    calls: Sequence[Callable[[], T]], lock_order: Sequence[str] | None = None, *, isolate: bool = True
) -> list[T | Exception]:
    """Run calls, each of which opens its own `transaction.atomic()`, in one transaction.
    Outcomes (a result or the error raised) come back in the order of `calls`.

    `isolate`: each call runs in a savepoint, so a failing call rolls back only its own
    work and the others commit together (sends: refusals are part of normal life). Without
    it (turn ends, which fail only when the database does) no savepoint is paid for; if a
    call fails, the whole group rolls back and each call runs again on its own.

    `lock_order`: the session each call locks. Calls run sorted by it, so two processes'
    groups take their session locks in the same order and can never deadlock each other.
    A lone call runs as it is (its own transaction)."""
    if len(calls) == 1:
        return [_outcome(calls[0])]
    order = sorted(range(len(calls)), key=lambda i: lock_order[i]) if lock_order else list(range(len(calls)))
    outcomes: dict[int, T | Exception] = {}
    if not isolate:
        try:
            with transaction.atomic():
                for index in order:
                    outcomes[index] = calls[index]()
        except Exception:
            logger.warning("a call of a group failed; running the group's calls one by one", exc_info=True)
            return [_outcome(call) for call in calls]
        return [outcomes[index] for index in range(len(calls))]
    with transaction.atomic():
        for index in order:
            try:
                with transaction.atomic():
                    outcomes[index] = calls[index]()
            except Exception as exc:
                outcomes[index] = exc
    return [outcomes[index] for index in range(len(calls))]


def _outcome(call: Callable[[], T]) -> T | Exception:
    try:
        return call()
    except Exception as exc:
        return exc


def lock_session(session: ChatSession) -> ChatSession:
    """Serialise the session's state changes: its row lock where the database has row locks;
    on SQLite the IMMEDIATE transaction already holds the database's write lock."""
    if not connection.features.has_select_for_update:
        return session
    return ChatSession.objects.select_for_update().get(pk=session.pk)


def lock_session_row(session_id: Any) -> None:
    """`lock_session` for a caller that has only the session's id."""
    if connection.features.has_select_for_update:
        list(ChatSession.objects.select_for_update().filter(pk=session_id).values_list("pk", flat=True))


def _send_locked(session: ChatSession, user: AbstractBaseUser, body: SendBody, *, check_repeat: bool) -> SendResult:
    session = lock_session(session)
    # Ids are unique per session: a first pass inserts and lets a repeated id raise
    # IntegrityError; only then is the earlier send looked up (saves queries per send).
    existing = _existing(session, body) if check_repeat else None
    if existing is not None:
        return existing
    policy = body.policy or session.policy
    # No joins: most sends find nothing in flight, and default_parent loads the one node
    # it needs when something is.
    in_flight = list(Turn.objects.filter(session=session, status__in=IN_FLIGHT).order_by("id"))
    emitted: list[Event] = []
    interrupted: list[Turn] = []
    if policy == Policy.REJECT and any(t.status == TurnStatus.ACTIVE for t in in_flight):
        raise Busy("a turn is still streaming in this session")
    if policy == Policy.INTERRUPT:
        outcome = cancel_locked(session=session, requester=user, flt=CancelFilter(own=True), only_active=True)
        emitted.extend(outcome.events)
        interrupted = [t for t in in_flight if t.turn_id in outcome.cancelled]
    status = TurnStatus.ACTIVE
    if policy == Policy.QUEUE and in_flight:
        if sum(t.status == TurnStatus.QUEUED for t in in_flight) >= app_settings.QUEUE_LIMIT:
            raise QueueFull(f"this session already queues {app_settings.QUEUE_LIMIT} messages")
        status = TurnStatus.QUEUED

    client_id = client_id_of(user)
    turn = Turn.objects.create(
        session=session,
        turn_id=body.turn_id or str(uuid.uuid4()),
        user_id=user.pk,
        client_id=client_id,
        status=status,
        policy=policy,
        model=session.model,
        model_options=session.model_options,
        started_at=timezone.now() if status == TurnStatus.ACTIVE else None,
    )
    new_nodes: list[MessageNode] = []
    fork_of: MessageNode | None = None
    if body.regenerate:
        fork_of = _node(session, body.regenerate, "regenerate")
        if fork_of.role != Role.ASSISTANT or fork_of.parent is None:
            raise Invalid("regenerate names an assistant message")
        user_node = fork_of.parent
    else:
        if body.fork_of:
            edited = _node(session, body.fork_of, "forkOf")
            if edited.role != Role.USER:
                raise Invalid("forkOf names a user message (use regenerate for answers)")
            parent = edited.parent
        elif body.parent:
            parent = _node(session, body.parent, "parent")
        else:
            parent = default_parent(session=session, policy=policy, in_flight=in_flight, interrupted=interrupted)
        for index, message in enumerate(body.messages):
            parent = MessageNode.objects.create(
                session=session,
                node_id=message.id,
                parent=parent,
                role=Role.USER,
                parts=_parts(message),
                turn=turn,
                client_id=client_id,
                fork_of=edited if body.fork_of and index == 0 else None,
            )
            new_nodes.append(parent)
        user_node = new_nodes[-1]
    assistant = MessageNode.objects.create(
        session=session,
        node_id=f"a-{uuid.uuid4()}",
        parent=user_node,
        role=Role.ASSISTANT,
        parts=[],
        turn=turn,
        client_id=client_id,
        fork_of=fork_of,
        status=NodeStatus.STREAMING if status == TurnStatus.ACTIVE else NodeStatus.QUEUED,
    )
    new_nodes.append(assistant)
    turn.user_message, turn.assistant_message = user_node, assistant
    turn.save(update_fields=["user_message", "assistant_message"])

    emitted.extend(events.message(node, turn.turn_id) for node in new_nodes)
    # Only a client-chosen turnId can have been cancelled before the server saw it.
    if body.turn_id and take_held_cancel(session=session, turn_id=turn.turn_id, owner_client_id=client_id):
        from sessions_app.cancellation.core import end_queued

        end_queued(turn, by=client_id)
        assistant.status = NodeStatus.CANCELLED
        emitted.append(events.turn_end(turn))
    elif status == TurnStatus.QUEUED:
        emitted.append(events.turn_queued(turn, sum(t.status == TurnStatus.QUEUED for t in in_flight) + 1))
    else:
        emitted.append(events.turn_start(turn))

    events.emit_on_commit(str(session.pk), emitted)
    if turn.status == TurnStatus.ACTIVE:
        _announce(lambda: _dispatch(turn.pk))
    # The session's updated_at moves when its `message` events are archived (events.py).
    _announce(lambda: _send_signals(new_nodes, turn))
    return SendResult(turn=turn, created=True, message_ids=[m.id for m in body.messages])


def _send_signals(nodes: Sequence[MessageNode], turn: Turn) -> None:
    for node in nodes:
        signals.message_created.send(sender=MessageNode, node=node)
    if turn.status == TurnStatus.ACTIVE:
        signals.turn_started.send(sender=Turn, turn=turn)
    elif turn.is_ended:
        signals.turn_ended.send(sender=Turn, turn=turn, reason=turn.status)


def _announce_ended(turns: Sequence[Turn]) -> None:
    for turn in turns:
        signals.turn_ended.send(sender=Turn, turn=turn, reason=turn.status)


def turns_cancel(
    *,
    session_id: Any,
    user: AbstractBaseUser,
    flt: CancelFilter,
    as_admin: bool = False,
) -> CancelOutcome:
    """Cancel the turns `flt` matches that the authoriser allows; report the rest."""
    session = (
        ChatSession.objects.filter(pk=session_id).first()
        if as_admin
        else require_member(session_id=session_id, user=user)
    )
    if session is None:
        raise NotFound("no such session")
    with transaction.atomic():
        session = lock_session(session)
        outcome = cancel_locked(session=session, requester=user, flt=flt, bypass_authoriser=as_admin)
        events.emit_on_commit(str(session.pk), outcome.events)
        ended = list(outcome.ended)
        _announce(lambda: _announce_ended(ended))
    return outcome


# --- the worker's side of the state machine ----------------------------------------------


@dataclass
class ClaimedTurn:
    """What a worker needs to run a turn, loaded once when it claims it."""

    pk: int
    session_id: str
    turn_id: str
    client_id: str
    model: str
    model_options: dict[str, Any]
    assistant_message_id: str
    cancel_requested: bool
    context: list[dict[str, Any]] = field(default_factory=list)


def turn_claim(*, turn_pk: int, worker_id: str) -> ClaimedTurn | None:
    """Claim an active turn for this worker; None if it was claimed before or has ended
    (a redelivered task never runs a turn twice)."""
    return turns_claim(turn_pks=[turn_pk], worker_id=worker_id)[0]


def turns_claim(*, turn_pks: Sequence[int], worker_id: str) -> list[ClaimedTurn | None]:
    """Claim many turns in one transaction (a worker claims the turns it was handed
    meanwhile together: engine.py). One outcome per pk, in order: None for a turn claimed
    before, ended, or named twice (only its first request gets it)."""
    claimed = _claim(turn_pks, worker_id)
    return [claimed.pop(pk, None) for pk in turn_pks]


def _claim(turn_pks: Sequence[int], worker_id: str) -> dict[int, ClaimedTurn]:
    with transaction.atomic():
        # FOR UPDATE where there are row locks: a worker claiming the same turn at the same
        # moment waits, then sees it taken. SQLite's IMMEDIATE transaction serialises anyway.
        turns = list(
            Turn.objects.select_for_update()
            .filter(pk__in=list(turn_pks), status=TurnStatus.ACTIVE, worker_id="")
            .order_by("pk")
        )
        if not turns:
            return {}
        Turn.objects.filter(pk__in=[turn.pk for turn in turns]).update(worker_id=worker_id)
    # The turns' own nodes come with their sessions' (the context needs those anyway).
    nodes = session_nodes({turn.session_id for turn in turns})
    claimed = {}
    for turn in turns:
        user_message, assistant_message = nodes[turn.user_message_id or 0], nodes[turn.assistant_message_id or 0]
        claimed[turn.pk] = ClaimedTurn(
            pk=turn.pk,
            session_id=str(turn.session_id),
            turn_id=turn.turn_id,
            client_id=turn.client_id,
            model=turn.model,
            model_options=dict(turn.model_options),
            assistant_message_id=assistant_message.node_id,
            cancel_requested=bool(turn.cancel_requested_by),
            context=[{"role": n.role, "parts": n.parts} for n in context_path(user_message, nodes)],
        )
    return claimed


def turn_finish(
    *,
    turn_pk: int,
    status: str,
    parts: list[dict[str, Any]],
    content_seq: int,
    error_code: str = "",
    error_message: str = "",
    usage: dict[str, Any] | None = None,
    finish_reason: str = "",
    session_id: Any = None,
) -> bool:
    """End an active turn with its final answer, then start the next queued turn if the
    session has no active turn left. False if the turn had already ended. `session_id`:
    the turn's session, when the caller knows it (the worker does; it saves a query).

    This is on the path of every cancel and every answer's end, so it reads the session's
    in-flight turns once, for both the turn itself and the queue."""
    if session_id is None:
        session_id = Turn.objects.filter(pk=turn_pk).values_list("session_id", flat=True).first()
        if session_id is None:
            raise Turn.DoesNotExist(f"no turn {turn_pk}")
    # No savepoint of its own: grouped finishes give each one (in_one_transaction).
    with transaction.atomic(savepoint=False):
        lock_session_row(session_id)
        in_flight = list(
            Turn.objects.filter(session_id=session_id, status__in=IN_FLIGHT)
            .select_related("assistant_message")
            .order_by("id")
        )
        turn = next((t for t in in_flight if t.pk == turn_pk and t.status == TurnStatus.ACTIVE), None)
        if turn is None:
            return False
        now = timezone.now()
        Turn.objects.filter(pk=turn_pk, status=TurnStatus.ACTIVE).update(
            status=status,
            ended_at=now,
            error_code=error_code,
            error_message=error_message,
            usage=usage or {},
            finish_reason=finish_reason,
        )
        turn.status, turn.ended_at, turn.error_code, turn.error_message = status, now, error_code, error_message
        turn.usage, turn.finish_reason = usage or {}, finish_reason
        MessageNode.objects.filter(pk=turn.assistant_message_id or 0).update(
            parts=parts,
            content_seq=content_seq,
            status=status,
        )
        promoted = _promote_queue([t for t in in_flight if t.pk != turn_pk])
        emitted = [events.turn_end(turn)]
        if promoted:
            emitted.append(events.turn_start(promoted))
        events.emit_on_commit(str(session_id), emitted)
        if promoted:
            # After its `turn.start` is published: no delta of it may come first.
            _announce(lambda: _dispatch(promoted.pk))
            _announce(lambda: _announce_started(promoted))
        _announce(lambda: _announce_ended([turn]))
        if turn.assistant_message:
            message_id = turn.assistant_message.node_id
            _announce(lambda: live.expire_live_content_sync(str(session_id), message_id))
    return True


def turns_finish(outcomes: Sequence[dict[str, Any]]) -> list[bool | Exception]:
    """Many `turn_finish` calls (keyword arguments each) in one transaction (a worker ends
    the turns that ended meanwhile together: engine.py)."""
    return in_one_transaction(
        [partial(turn_finish, **outcome) for outcome in outcomes],
        lock_order=[str(outcome.get("session_id", "")) for outcome in outcomes],
        isolate=False,
    )


def _announce_started(turn: Turn) -> None:
    signals.turn_started.send(sender=Turn, turn=turn)


def _promote_queue(in_flight: Sequence[Turn]) -> Turn | None:
    """Start the oldest queued turn when nothing is active (first in, first out); returns
    it. `in_flight`: the session's in-flight turns in creation order, read under its lock."""
    if not in_flight or any(t.status == TurnStatus.ACTIVE for t in in_flight):
        return None
    turn = in_flight[0]
    Turn.objects.filter(pk=turn.pk).update(status=TurnStatus.ACTIVE, started_at=timezone.now())
    MessageNode.objects.filter(pk=turn.assistant_message_id or 0).update(status=NodeStatus.STREAMING)
    turn.status = TurnStatus.ACTIVE
    return turn


def turns_fail_lost(*, live_workers: set[str], scope: str = "") -> list[str]:
    """End active turns whose worker (of this deployment: ids starting with `scope`) has
    stopped heartbeating with error `worker_lost`, keeping what they streamed. Returns the
    ended turn ids."""
    lost = (
        Turn.objects.filter(status=TurnStatus.ACTIVE, worker_id__startswith=scope)
        .exclude(worker_id="")
        .exclude(worker_id__in=live_workers)
        .select_related("assistant_message")
    )
    ended = []
    for turn in lost:
        message_id = turn.assistant_message.node_id if turn.assistant_message else ""
        content = live.live_content_sync(str(turn.session_id), message_id)
        if turn_finish(
            turn_pk=turn.pk,
            session_id=turn.session_id,
            status=TurnStatus.ERROR,
            parts=content.parts,
            content_seq=content.content_seq,
            error_code="worker_lost",
            error_message="the worker running this turn stopped",
        ):
            ended.append(turn.turn_id)
    return ended
