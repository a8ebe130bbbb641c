"""Sending: a user's message(s) start a turn, queue it or are refused, following the
double-texting policy (docs/protocol.md, "Double texting: the policies"); a repeated send returns the turn it created.

Sends are handled in sets. A burst of sends (the websocket consumers of a process send
together what arrived meanwhile: grouping.py) costs one query per step for the whole set,
not per send: one membership read, one in-flight read, one insert of the turns, one of the
user messages, one of the answers, one update linking them, then one Redis pipeline for
every event and one task for every turn to start (decision 014). A lone send is a set of
one and takes the same path.

A set is cut into waves with each session at most once, in arrival order: a send sees the
turns the earlier sends of its session created, exactly as if they had come one by one.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from sessions_app.agents.config import Agent, agent, agent_name, client_id_for, orchestrator_of
from sessions_app.cancellation.services import cancel_locked, client_id_of, take_held_cancels
from sessions_app.conf import app_settings
from sessions_app.errors import Busy, ChatError, Conflict, Invalid, NotFound, QueueFull, RateLimited, TooLarge
from sessions_app.events import build, emit
from sessions_app.infra.live_state import Event
from sessions_app.infra.sql import insert_new, unique_row
from sessions_app.models import ChatSession, MessageNode, NodeStatus, Policy, Role, Turn, TurnStatus
from sessions_app.schemas import CancelFilter, SendBody, UserMessage
from sessions_app.sessions.services import members_of, require_member
from sessions_app.tree import default_parent
from sessions_app.turns import announce, send_rate, transitions
from sessions_app.turns._queries import in_flight_turns, link_turns_to_messages, newest_settled_nodes
from sessions_app.turns.locking import lock_sessions


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


@dataclass(frozen=True)
class Acting:
    """A send the server makes for an agent (sessions_app/agents/services.py): the turn is
    the agent's (its clientId, its model `agent:<name>`), may work for a parent turn, and may
    answer an existing user message (`reply_to`, a node id) instead of adding messages."""

    client_id: str
    model: str
    parent_turn: Turn | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class SendRequest:
    session_id: Any
    user: AbstractBaseUser  # the sender; for an agent's send, the user it works for
    body: SendBody
    acting: Acting | None = None


Outcome = SendResult | Exception


def turn_send(*, session_id: Any, user: AbstractBaseUser, body: SendBody, acting: Acting | None = None) -> SendResult:
    """Start (or queue) a turn for the user's message(s), or for an agent (`acting`); raises
    the send's error."""
    [outcome] = turns_send([SendRequest(session_id, user, body, acting)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def turns_send(requests: Sequence[SendRequest]) -> list[Outcome]:
    """Many sends in one transaction. One outcome per request, in order: its result or
    the error it alone raised (the others commit)."""
    outcomes: dict[int, Outcome] = {}
    sessions = _admitted(requests, outcomes)
    try:
        if sessions:
            with transaction.atomic():
                fresh = lock_sessions({session.pk for session in sessions.values()})
                for wave in _waves(sessions):
                    items = [(i, requests[i], fresh.get(sessions[i].pk, sessions[i])) for i in wave]
                    outcomes.update(_send_wave(items, check_repeat=False))
    except IntegrityError:
        # An id of some send exists already (a repeated send, or two racing): every send of
        # the set again on its own, where the repeat check answers with the turn it names.
        return [outcomes[i] if i not in sessions else _send_alone(r, check_repeat=True) for i, r in enumerate(requests)]
    for i in sessions:
        # A refusal may answer a repeat of a send that was accepted: look again for its turn.
        if isinstance(outcomes[i], Busy | QueueFull):
            outcomes[i] = _send_alone(requests[i], check_repeat=True)
    return [outcomes[i] for i in range(len(requests))]


def _send_alone(request: SendRequest, *, check_repeat: bool) -> Outcome:
    for attempt in range(3):
        try:
            with transaction.atomic():
                session = require_member(session_id=request.session_id, user=request.user)
                session = lock_sessions([session.pk]).get(session.pk, session)
                [(_, outcome)] = _send_wave([(0, request, session)], check_repeat=check_repeat).items()
                return outcome
        except ChatError as exc:
            return exc
        except IntegrityError:
            if attempt == 2:
                return Conflict("this send conflicts with another one")
    raise AssertionError("unreachable")


def _admitted(requests: Sequence[SendRequest], outcomes: dict[int, Outcome]) -> dict[int, ChatSession]:
    """The session of each request that may send: a member, within the sizes and the rate;
    the others get their error in `outcomes`."""
    members = members_of([(r.session_id, r.user) for r in requests])
    for i, (request, member) in enumerate(zip(requests, members, strict=True)):
        if isinstance(member, Exception):
            outcomes[i] = member
            continue
        try:
            _check_sizes(request.body)
        except TooLarge as exc:
            outcomes[i] = exc
    admitted = [i for i in range(len(requests)) if i not in outcomes]
    for i, refusal in zip(admitted, send_rate.refusals([requests[i].user for i in admitted]), strict=True):
        if refusal is not None:
            outcomes[i] = refusal
    return {i: member for i, member in enumerate(members) if i not in outcomes and isinstance(member, ChatSession)}


def _check_sizes(body: SendBody) -> None:
    if len(body.messages) > app_settings.MAX_MESSAGES_PER_SEND:
        raise TooLarge(f"at most {app_settings.MAX_MESSAGES_PER_SEND} messages per send")
    for message in body.messages:
        if sum(len(p.text) for p in message.parts) > app_settings.MAX_MESSAGE_CHARS:
            raise TooLarge(f"a message holds at most {app_settings.MAX_MESSAGE_CHARS} characters")


def _waves(sessions: dict[int, ChatSession]) -> list[list[int]]:
    """Request indices in waves holding each session at most once; the k-th send of a
    session goes in wave k."""
    waves: list[list[int]] = []
    seen: Counter[Any] = Counter()
    for i in sorted(sessions):
        k = seen[sessions[i].pk]
        seen[sessions[i].pk] += 1
        if k == len(waves):
            waves.append([])
        waves[k].append(i)
    return waves


# --- one wave: decide each send, then write them all --------------------------------------


@dataclass
class _Plan:
    """An accepted send of a wave, decided and not yet written."""

    index: int
    session: ChatSession
    body: SendBody
    turn: Turn
    parent: MessageNode | None = None
    edited: MessageNode | None = None  # forkOf
    regenerated: MessageNode | None = None
    queued_before: int = 0
    interrupts: list[str] = field(default_factory=list)  # turnIds an interrupting turn waits for
    signals: list[tuple[str, list[int]]] = field(default_factory=list)  # the workers to tell to stop them
    emitted: list[Event] = field(default_factory=list)
    new_nodes: list[MessageNode] = field(default_factory=list)
    # An orchestrated send's sub-agent turns (their answers are siblings under its user
    # message, before its own answer), an agent's answer to an existing message, and the
    # clientId its answer is written by (an orchestrator's answer is labelled with it).
    children: list[Turn] = field(default_factory=list)
    answer_parent: MessageNode | None = None
    author: str = ""


def _send_wave(items: Sequence[tuple[int, SendRequest, ChatSession]], *, check_repeat: bool) -> dict[int, Outcome]:
    """Sends to distinct sessions, whose locks the caller holds. Refusals come back as
    outcomes; an IntegrityError (an id taken) is raised for the caller to retry alone."""
    outcomes: dict[int, Outcome] = {}
    if check_repeat:
        for index, request, session in items:
            existing = _existing(session, request.body, request.user)
            if existing is not None and request.acting is not None:
                # Sub-agents sharing a turnId would collide on every device: never a repeat.
                raise Conflict(f"turnId {existing.turn.turn_id!r} is already used in this session")
            if existing is not None:
                outcomes[index] = existing
    todo = [item for item in items if item[0] not in outcomes]
    in_flight = _in_flight_by_session([session.pk for _, _, session in todo])
    # Where a message attaches in a session with nothing in flight: read for all at once.
    newest = newest_settled_nodes([session.pk for _, _, session in todo if not in_flight[session.pk]])
    plans: list[_Plan] = []
    for index, request, session in todo:
        try:
            plans.append(_plan(index, request, session, in_flight[session.pk], newest.get(session.pk)))
        except ChatError as exc:
            outcomes[index] = exc
    if plans:
        _write(plans)
        _emit_on_commit(plans)
    for plan in plans:
        ids = [m.id for m in plan.body.messages]
        outcomes[plan.index] = SendResult(turn=plan.turn, created=True, message_ids=ids)
    return outcomes


def _in_flight_by_session(session_ids: Sequence[Any]) -> dict[Any, list[Turn]]:
    by_session: dict[Any, list[Turn]] = {pk: [] for pk in session_ids}
    for turn in in_flight_turns(session_ids):
        by_session[turn.session_id].append(turn)
    return by_session


def _plan(
    index: int, request: SendRequest, session: ChatSession, in_flight: list[Turn], newest: MessageNode | None
) -> _Plan:
    """Decide one send: refuse it (raise), or what it creates and where it attaches. Every
    check that can refuse comes before the interrupt's cancel, the one write made here."""
    body, user, acting = request.body, request.user, request.acting
    regenerated = _regenerated(session, body.regenerate) if body.regenerate else None
    if acting is None and regenerated is not None:
        acting = _sub_agent_again(regenerated, session)  # an agent's answer regenerated: that agent answers again
    # An agent's turn runs alongside the others unless its starter names a policy.
    policy = body.policy or (Policy.CONCURRENT if acting else session.policy)
    streaming = any(t.status == TurnStatus.ACTIVE for t in in_flight)
    if policy == Policy.REJECT and streaming:
        raise Busy("a turn is still streaming in this session")
    # A user's message to a session with an orchestrating agent also starts its sub-agents:
    # those still in the session (the owner removed the others from it).
    orchestrator = None if acting else orchestrator_of(session.agents)
    sub_agents = [name for name in orchestrator.sub_agents if name in session.agents] if orchestrator else []
    client_id = acting.client_id if acting else client_id_of(user)
    queued = sum(t.status == TurnStatus.QUEUED and t.parent_turn_id is None for t in in_flight)
    status = TurnStatus.QUEUED if policy == Policy.QUEUE and in_flight else TurnStatus.ACTIVE
    interrupting = client_id if policy == Policy.INTERRUPT else None
    if status == TurnStatus.ACTIVE and _over_cap(in_flight, 1 + len(sub_agents), interrupting):
        if app_settings.ACTIVE_TURNS_OVERFLOW == "reject":
            raise RateLimited(f"this session already runs {app_settings.MAX_ACTIVE_TURNS} turns at once")
        status = TurnStatus.QUEUED
    if status == TurnStatus.QUEUED and queued >= app_settings.QUEUE_LIMIT:
        raise QueueFull(f"this session already queues {app_settings.QUEUE_LIMIT} messages")
    plan = _Plan(
        index=index,
        session=session,
        body=body,
        queued_before=queued,
        regenerated=regenerated,
        author=orchestrator.client_id if orchestrator else client_id,
        turn=Turn(
            session=session,
            turn_id=body.turn_id or str(uuid.uuid4()),
            user_id=user.pk,
            client_id=client_id,
            status=status,
            policy=policy,
            model=acting.model if acting else orchestrator.turn_model if orchestrator else session.model,
            # An agent's options are its configuration's, read when the turn runs.
            model_options={} if acting or orchestrator else session.model_options,
            parent_turn=acting.parent_turn if acting else None,
            started_at=timezone.now() if status == TurnStatus.ACTIVE else None,
        ),
    )
    if acting is not None and acting.reply_to:
        plan.answer_parent = _node(session, acting.reply_to, "replyTo")
        if plan.answer_parent.role != Role.USER:
            raise Invalid("an agent answers a user message")
    elif body.fork_of:  # (a regenerate names neither forkOf nor parent: SendBody)
        plan.edited = _node(session, body.fork_of, "forkOf")
        if plan.edited.role != Role.USER:
            raise Invalid("forkOf names a user message (use regenerate for answers)")
        plan.parent = plan.edited.parent
    elif body.parent:
        plan.parent = _node(session, body.parent, "parent")
    interrupted: list[Turn] = []
    if policy == Policy.INTERRUPT and streaming:
        # Only an active turn is interrupted: with none in flight there is nothing to read.
        # An agent interrupts its own turns: the server acts for it, no authoriser is asked.
        flt = CancelFilter(client_id=client_id) if acting else CancelFilter(own=True)
        outcome = cancel_locked(
            session=session,
            requester=user,
            flt=flt,
            signals=plan.signals,
            only_active=True,
            bypass_authoriser=acting is not None,
        )
        plan.emitted.extend(outcome.events)
        # An interrupt of the sender's still waiting for its turns to stop is superseded by
        # this one (cancel-then-send: only the newest message is answered), and this one waits
        # for what it waited for: the sender's turns whose cancel was asked before. (Without
        # such an interrupt, a turn another cancel already stops is not waited for: the new
        # turn starts at once, as before.)
        superseded = _waiting_interrupts(in_flight, client_id)
        for waiting in superseded:
            later = cancel_locked(
                session=session,
                requester=user,
                flt=CancelFilter(turn_id=waiting.turn_id),
                signals=plan.signals,
                bypass_authoriser=True,  # the sender's own
            )
            plan.emitted.extend(later.events)
        still_ending = [
            t.turn_id
            for t in _own_top_level(in_flight, client_id)
            if superseded and t.status == TurnStatus.ACTIVE and t.cancel_requested_by
        ]
        # Sub-agent turns were cancelled with the turns they work for; those are what it follows.
        interrupted = [
            t
            for t in in_flight
            if (t.turn_id in outcome.cancelled or t.turn_id in still_ending) and t.parent_turn_id is None
        ]
        ended_here = {t.turn_id for t in outcome.ended}  # never claimed: ended by the cancel
        stopping = [turn_id for turn_id in outcome.cancelled if turn_id not in ended_here] + still_ending
        if stopping:
            # Cancel-then-send: the new turn waits until the workers have ended the turns it
            # interrupts, whose `turn.end` every device then sees before its `turn.start`
            # (running.turn_finish starts it; overdue_interrupts bounds the wait).
            plan.turn.status, plan.turn.started_at, plan.interrupts = TurnStatus.QUEUED, None, stopping
    # Decided last: they start (or wait) with their parent, whatever the interrupt made it.
    plan.children = [_sub_agent_turn(plan.turn, name) for name in sub_agents]
    if not (body.regenerate or body.fork_of or body.parent or plan.answer_parent):
        # A message attaches by the turns users and agents started, not by sub-agent turns.
        top_level = [t for t in in_flight if t.parent_turn_id is None]
        plan.parent = default_parent(policy=policy, in_flight=top_level, interrupted=interrupted, newest=newest)
    return plan


def _own_top_level(in_flight: Sequence[Turn], client_id: str) -> list[Turn]:
    return [t for t in in_flight if t.client_id == client_id and t.parent_turn_id is None]


def _waiting_interrupts(in_flight: Sequence[Turn], client_id: str) -> list[Turn]:
    """The sender's interrupting turns still waiting for the turns they interrupt to stop."""
    return [
        t
        for t in _own_top_level(in_flight, client_id)
        if t.status == TurnStatus.QUEUED and t.policy == Policy.INTERRUPT and not t.cancel_requested_by
    ]


def _over_cap(in_flight: Sequence[Turn], starting: int, interrupting: str | None) -> bool:
    """Would `starting` more active turns take the session over MAX_ACTIVE_TURNS? A turn
    whose cancel was asked is ending and does not count, nor, for an interrupt, the
    sender's own turns (and their sub-agents) it is about to cancel."""
    cap = int(app_settings.MAX_ACTIVE_TURNS)
    if cap <= 0:
        return False
    leaving = {t.pk for t in in_flight if interrupting is not None and t.client_id == interrupting}
    running = sum(
        t.status == TurnStatus.ACTIVE
        and not t.cancel_requested_by
        and t.pk not in leaving
        and t.parent_turn_id not in leaving
        for t in in_flight
    )
    return running + starting > cap


def _sub_agent_turn(parent: Turn, name: str) -> Turn:
    """A sub-agent's turn of an orchestrated send: its own turnId and clientId, started (or
    queued) with its parent."""
    return Turn(
        session=parent.session,
        turn_id=str(uuid.uuid4()),
        user_id=parent.user_id,
        client_id=client_id_for(name),
        status=parent.status,
        policy=Policy.CONCURRENT,
        model=client_id_for(name),
        model_options={},
        parent_turn=parent,
        started_at=parent.started_at,
    )


def _regenerated(session: ChatSession, node_id: str) -> MessageNode:
    node = _node(session, node_id, "regenerate")
    if node.role != Role.ASSISTANT or node.parent is None:
        raise Invalid("regenerate names an assistant message")
    return node


def _sub_agent_again(answer: MessageNode, session: ChatSession) -> Acting | None:
    """Regenerating an answer a (non-orchestrating) agent wrote asks that agent again, if it
    is still in the session; else the session answers as it would a message now."""
    name = agent_name(answer.client_id)
    configured: Agent | None = agent(name) if name else None
    if configured is None or configured.orchestrates or configured.name not in (session.agents or ()):
        return None
    return Acting(client_id=configured.client_id, model=configured.turn_model)


def _node(session: ChatSession, node_id: str, what: str) -> MessageNode:
    node = unique_row(MessageNode.objects.filter(session=session, node_id=node_id).select_related("parent"))
    if node is None:
        raise NotFound(f"{what} {node_id!r} is not a message of this session")
    return node


def _write(plans: list[_Plan]) -> None:
    """Insert the wave's turns, user messages and answers, a statement each, then link
    the turns to their messages in one more."""
    insert_new([plan.turn for plan in plans])
    children = [child for plan in plans for child in plan.children]
    if children:
        insert_new(children)  # after their parents: they point at them
    # The messages of one send form a chain: insert them layer by layer (the k-th message
    # of every send together), each layer's parents being the layer before.
    user_nodes: dict[int, MessageNode | None] = {
        plan.index: plan.regenerated.parent if plan.regenerated else plan.answer_parent for plan in plans
    }
    depth = max((len(plan.body.messages) for plan in plans), default=0)
    for k in range(depth):
        layer = [
            _user_node(plan, plan.body.messages[k], user_nodes[plan.index] or plan.parent, first=k == 0)
            for plan in plans
            if k < len(plan.body.messages)
        ]
        insert_new(layer)
        for node, plan in zip(layer, [p for p in plans if k < len(p.body.messages)], strict=True):
            user_nodes[plan.index] = node
            plan.new_nodes.append(node)
    # A send's answers: its sub-agents' first, then its own, which so follows them (the
    # newest sibling is what devices show and where the next message attaches).
    owners = [(plan, turn) for plan in plans for turn in [*plan.children, plan.turn]]
    answers = [_answer_node(plan, user_nodes[plan.index], turn) for plan, turn in owners]
    insert_new(answers)
    for (plan, turn), answer in zip(owners, answers, strict=True):
        plan.new_nodes.append(answer)
        turn.user_message, turn.assistant_message = user_nodes[plan.index], answer
    # Each turn's answer, and the answer's parent as its user message: one statement.
    link_turns_to_messages([turn.pk for _, turn in owners])
    _apply_held_cancels(plans)


def _user_node(plan: _Plan, message: UserMessage, parent: MessageNode | None, *, first: bool) -> MessageNode:
    return MessageNode(
        session=plan.session,
        node_id=message.id,
        parent=parent,
        role=Role.USER,
        parts=_parts(message),
        turn=plan.turn,
        client_id=plan.turn.client_id,
        fork_of=plan.edited if first else None,
    )


def _answer_node(plan: _Plan, user_node: MessageNode | None, turn: Turn) -> MessageNode:
    own = turn is plan.turn
    return MessageNode(
        session=plan.session,
        node_id=f"a-{uuid.uuid4()}",
        parent=user_node,
        role=Role.ASSISTANT,
        parts=[],
        turn=turn,
        client_id=plan.author if own else turn.client_id,
        fork_of=plan.regenerated if own else None,
        status=NodeStatus.STREAMING if turn.status == TurnStatus.ACTIVE else NodeStatus.QUEUED,
    )


def _apply_held_cancels(plans: list[_Plan]) -> None:
    """A cancel sent for a client-chosen turnId before the send arrived ends that turn now
    (only a client-chosen turnId can have been cancelled before the server saw it)."""
    chosen = [plan for plan in plans if plan.body.turn_id]
    if not chosen:
        return
    held = take_held_cancels([(p.session, p.turn.turn_id, p.turn.client_id) for p in chosen])
    for plan in chosen:
        by = held.get((plan.session.pk, plan.turn.turn_id))
        if by is not None and transitions.end_unstarted(plan.turn, by=by):
            plan.new_nodes[-1].status = NodeStatus.CANCELLED
            for child in plan.children:  # a parent's cancel is its sub-agents' too
                if transitions.end_unstarted(child, by=by) and child.assistant_message:
                    child.assistant_message.status = NodeStatus.CANCELLED


def _emit_on_commit(plans: list[_Plan]) -> None:
    """After commit: every event of the wave in one pipeline, then the turns that start go
    to the workers (after their `turn.start`: no delta may come before it), then signals.

    A wave that interrupts turns or queues one publishes its events as it commits instead,
    ahead of its answers and of the interrupted turns' workers' signals (decision 043): a
    worker ending a turn starts the queued turns from its own transaction, and its
    `turn.start` must not overtake their `message` and `turn.queued` (an HTTP send's events
    otherwise wait for its answer: decision 033)."""
    batches: list[tuple[str, list[Event]]] = []
    for plan in plans:
        plan.emitted.extend(build.message(node, node.turn.turn_id if node.turn else None) for node in plan.new_nodes)
        for turn in [plan.turn, *plan.children]:  # a parent's sub-agent turns start (or wait) with it
            if turn.is_ended:
                plan.emitted.append(build.turn_end(turn))
            elif plan.interrupts:
                plan.emitted.append(build.turn_queued(turn, 1, interrupts=plan.interrupts))
            elif turn.status == TurnStatus.QUEUED:
                plan.emitted.append(build.turn_queued(turn, plan.queued_before + 1))
            else:
                plan.emitted.append(build.turn_start(turn))
        batches.append((str(plan.session.pk), plan.emitted))
    turns = [turn for plan in plans for turn in [plan.turn, *plan.children]]
    starting = [turn.pk for turn in turns if turn.status == TurnStatus.ACTIVE]

    def announce_all() -> None:
        announce.run(starting)
        for plan in plans:
            announce.created(plan.new_nodes)
        announce.started([turn for turn in turns if turn.status == TurnStatus.ACTIVE])
        announce.ended([turn for turn in turns if turn.is_ended])

    # The sessions' updated_at moves when their `message` events are archived (events.py).
    signals = [signal for plan in plans for signal in plan.signals]
    if signals or any(turn.status == TurnStatus.QUEUED for turn in turns):
        emit.ahead_of_workers(batches, signals, then=announce_all)
    else:
        emit.in_commit_order(batches, then=announce_all)


# --- repeated sends ----------------------------------------------------------------------


def _parts(message: UserMessage) -> list[dict[str, Any]]:
    return [p.model_dump() for p in message.parts]


def _existing(session: ChatSession, body: SendBody, user: AbstractBaseUser) -> SendResult | None:
    """The turn a repeated send already created, or None; Conflict if ids are reused for
    different content, by another member, or for part of an earlier send's messages."""
    turn: Turn | None = None
    if body.turn_id:
        turn = unique_row(
            Turn.objects.filter(session=session, turn_id=body.turn_id).select_related(
                "user_message", "assistant_message__fork_of"
            )
        )
    ids = [m.id for m in body.messages]
    nodes = {n.node_id: n for n in MessageNode.objects.filter(session=session, node_id__in=ids)}
    if turn is None and not nodes:
        return None
    if turn is None:
        first = nodes[ids[0]] if ids[0] in nodes else next(iter(nodes.values()))
        turn = unique_row(
            Turn.objects.filter(pk=first.turn_id or 0).select_related("user_message", "assistant_message__fork_of")
        )
        if turn is None or first.role != Role.USER:
            raise Conflict("a message id of this send is already used")
    if turn.user_id != user.pk:
        raise Conflict("these ids belong to another member's send")
    if body.regenerate:
        fork = turn.assistant_message.fork_of if turn.assistant_message else None
        if fork is None or fork.node_id != body.regenerate:
            raise Conflict(f"turnId {turn.turn_id!r} is already used by another send")
        return SendResult(turn=turn, created=False, message_ids=[])
    for message in body.messages:
        node = nodes.get(message.id)
        if node is None or node.turn_id != turn.pk or node.parts != _parts(message):
            raise Conflict("this send reuses an id of an earlier send with different content")
    sent_then = MessageNode.objects.filter(turn=turn, role=Role.USER).values_list("node_id", flat=True)
    if set(sent_then) != set(ids):
        raise Conflict("this send repeats only some of an earlier send's messages")
    if body.turn_id and body.turn_id != turn.turn_id:
        raise Conflict("these messages were sent with another turnId")
    return SendResult(turn=turn, created=False, message_ids=ids)
