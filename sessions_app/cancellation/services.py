"""Cancelling turns: the one place that decides a cancel. Match a filter, ask the
authoriser, end the turns no worker runs yet at once, flag the active ones and signal their
workers; hold a cancel for a turn not created yet. The state changes themselves are the
turns package's transitions.

Cancels that arrive together (a process's devices and HTTP clients cancelling at once:
web/commands.py) are decided in one transaction, like sends (`turns_cancel_many`): one
membership read for all, one commit, one Redis pipeline for their workers' signals and one
for their events, instead of a transaction and two round trips each."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from sessions_app.agents.config import AGENT_PREFIX
from sessions_app.cancellation.authorisers import CancelRequest
from sessions_app.conf import app_settings
from sessions_app.errors import ChatError, Forbidden, NotFound
from sessions_app.events import build, emit
from sessions_app.infra.db_threads import after_commit
from sessions_app.infra.live_state import Event
from sessions_app.models import IN_FLIGHT, ChatSession, HeldCancel, Turn, TurnStatus
from sessions_app.schemas import CancelFilter
from sessions_app.sessions.services import members_of, require_member, session_deleting
from sessions_app.turns import announce, transitions
from sessions_app.turns._queries import cancellable_turns, in_flight_turns
from sessions_app.turns.locking import lock_sessions
from sessions_app.turns.promotion import promote

logger = logging.getLogger(__name__)


@dataclass
class CancelOutcome:
    cancelled: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    ended: list[Turn] = field(default_factory=list)  # turns no worker had picked up, ended right here
    started: list[Turn] = field(default_factory=list)  # queued turns that took their places

    def as_dict(self) -> dict[str, list[str]]:
        return {"cancelled": self.cancelled, "rejected": self.rejected, "pending": self.pending}


def client_id_of(user: AbstractBaseUser) -> str:
    """A user's clientId: their username, taken from authentication. The prefix `agent:`
    is the agents' (a username cannot hold ":"; one made without Django's validator is
    refused here, wherever a user acts, so no one passes for an agent)."""
    client_id = str(user.get_username())
    if client_id.startswith(AGENT_PREFIX):
        raise Forbidden(f"the clientId prefix {AGENT_PREFIX!r} is reserved for agents")
    return client_id


def authorise(
    *,
    session: ChatSession,
    requester: AbstractBaseUser,
    filter_: dict[str, Any],
    owners: dict[str, str],
) -> set[str]:
    authoriser = import_string(app_settings.CANCEL_AUTHORISER)
    request = CancelRequest(
        session_id=str(session.pk),
        requester_id=int(requester.pk),
        client_id=client_id_of(requester),
        is_session_owner=session.owner_id == requester.pk,
        filter=filter_,  # type: ignore[attr-defined]
        matched_turn_ids=list(owners),
        turn_owners=owners,
    )
    return set(authoriser(request)) & set(owners)


def _match(session: ChatSession, requester: AbstractBaseUser, flt: CancelFilter, only_active: bool) -> list[Turn]:
    return cancellable_turns(
        session.pk,
        only_active=only_active,
        client_id=client_id_of(requester) if flt.own else flt.client_id,
        turn_id=flt.turn_id,
    )


def _hold(session: ChatSession, requester: AbstractBaseUser, turn_id: str) -> bool:
    """Hold a cancel for a turn not created yet; False if the session holds too many."""
    now = timezone.now()
    HeldCancel.objects.filter(session=session, expires_at__lte=now).delete()
    if HeldCancel.objects.filter(session=session).count() >= app_settings.HELD_CANCEL_LIMIT:
        return False
    HeldCancel.objects.update_or_create(
        session=session,
        turn_id=turn_id,
        defaults={
            "requested_by_id": requester.pk,
            "expires_at": now + timedelta(seconds=app_settings.HELD_CANCEL_TTL_SECONDS),
        },
    )
    return True


@dataclass(frozen=True)
class CancelCommand:
    """One member's cancel of a session's turns, as a device or an HTTP client sends it."""

    session_id: Any
    user: AbstractBaseUser
    flt: CancelFilter


def turns_cancel_many(commands: Sequence[CancelCommand]) -> list[CancelOutcome | Exception]:
    """Many members' cancels in one transaction, in order, each seeing what the earlier ones
    did (two cancels of one session as if one came after the other). One outcome per
    command: what it cancelled, or the error it alone raised (a session it may not use, a
    reserved clientId); the others still commit. If the transaction itself fails (the
    database, an authoriser that raises something else), each command runs again alone."""
    if len(commands) == 1:
        return [_alone(commands[0])]
    outcomes: dict[int, CancelOutcome | Exception] = {}
    admitted: dict[int, ChatSession] = {}
    for i, member in enumerate(members_of([(c.session_id, c.user) for c in commands])):
        if isinstance(member, ChatSession):
            admitted[i] = member
        else:
            outcomes[i] = member
    if not admitted:
        return [outcomes[i] for i in range(len(commands))]
    try:
        with transaction.atomic():
            fresh = lock_sessions({session.pk for session in admitted.values()})
            signals: list[tuple[str, list[int]]] = []
            for i, session in admitted.items():
                command = commands[i]
                try:
                    # A ChatError comes before the cancel writes anything (cancel_locked).
                    outcomes[i] = cancel_locked(
                        session=fresh.get(session.pk, session), requester=command.user, flt=command.flt, signals=signals
                    )
                except ChatError as exc:
                    outcomes[i] = exc
            decided = [(admitted[i], o) for i, o in outcomes.items() if isinstance(o, CancelOutcome)]
            for session, outcome in decided:
                _start_queued_turns(fresh.get(session.pk, session), outcome)
            started = [turn for _, o in decided for turn in o.started]
            batches = [(str(session.pk), o.events) for session, o in decided]
            _emit_on_commit(batches, signals, then=partial(announce.promoted, started))
            after_commit(lambda: announce.ended([turn for _, o in decided for turn in o.ended]))
    except Exception:
        logger.warning("a set of cancels failed; running its cancels one by one", exc_info=True)
        return [_alone(command) if i in admitted else outcomes[i] for i, command in enumerate(commands)]
    return [outcomes[i] for i in range(len(commands))]


def _alone(command: CancelCommand) -> CancelOutcome | Exception:
    try:
        return turns_cancel(session_id=command.session_id, user=command.user, flt=command.flt)
    except Exception as exc:  # its caller's alone, not the set's
        return exc


def _emit_on_commit(
    batches: Sequence[tuple[str, list[Event]]],
    signals: Sequence[tuple[str, list[int]]],
    then: Callable[[], None] | None = None,
) -> None:
    """The cancels' events, for every device. With turns to stop, they go as the
    transaction commits, ahead of the answers, and the workers' signals right behind them
    in the same write (decisions 038 and 043): a worker's `turn.end` then always follows the
    `cancel` that caused it. Without, after the answers, as any command's. `then` runs once
    they are published."""
    batches = [(session_id, events) for session_id, events in batches if events]
    if signals:
        emit.ahead_of_workers(batches, signals, then=then)
    elif batches:
        emit.in_commit_order(batches, then=then)


def _start_queued_turns(session: ChatSession, outcome: CancelOutcome) -> None:
    """A cancel that ended turns no worker had picked up yet freed their places: the queued
    turns that may start now start, as when a worker ends a turn (promotion.py), their
    `turn.start`s after the cancel's `turn.end`s. Without this, a turn queued behind an
    active turn that a cancel ended here would wait until some other turn of the session
    ended. One read, only when the cancel ended a turn here (the session's lock is held)."""
    if not outcome.ended:
        return
    in_flight = in_flight_turns([session.pk])
    if any(turn.status == TurnStatus.QUEUED for turn in in_flight):
        outcome.started = promote(in_flight)
        outcome.events.extend(build.turn_start(turn) for turn in outcome.started)


def turns_cancel(
    *,
    session_id: Any,
    user: AbstractBaseUser,
    flt: CancelFilter,
    as_admin: bool = False,
) -> CancelOutcome:
    """Cancel the turns `flt` matches that the authoriser allows (all of them `as_admin`,
    for an operator in the admin); report the rest. Raises NotFound for a session the user
    is not a member of."""
    session = (
        ChatSession.objects.filter(pk=session_id).first()
        if as_admin
        else require_member(session_id=session_id, user=user)
    )
    if session is None:
        raise NotFound("no such session")
    with transaction.atomic():
        session = lock_sessions([session.pk]).get(session.pk, session)
        signals: list[tuple[str, list[int]]] = []
        outcome = cancel_locked(session=session, requester=user, flt=flt, bypass_authoriser=as_admin, signals=signals)
        _start_queued_turns(session, outcome)
        _emit_on_commit([(str(session.pk), outcome.events)], signals, then=partial(announce.promoted, outcome.started))
        announce.ended_on_commit(outcome.ended)
    return outcome


def cancel_locked(
    *,
    session: ChatSession,
    requester: AbstractBaseUser,
    flt: CancelFilter,
    signals: list[tuple[str, list[int]]],
    only_active: bool = False,
    bypass_authoriser: bool = False,
) -> CancelOutcome:
    """Cancel what `flt` matches. The caller holds the session lock, and on commit emits
    `outcome.events` and signals the workers to stop the turns this adds to `signals`
    ((session id, turn pks)): events first (`emit.ahead_of_workers`). A ChatError is
    raised before anything is written (turns_cancel_many relies on it)."""
    outcome = CancelOutcome()
    matched = _match(session, requester, flt, only_active)
    if flt.turn_id is not None and not matched:
        if not Turn.objects.filter(session=session, turn_id=flt.turn_id).exists():
            (outcome.pending if _hold(session, requester, flt.turn_id) else outcome.rejected).append(flt.turn_id)
        return outcome  # unknown-yet is held; already ended is a no-op
    if not matched:
        return outcome
    owners = {t.turn_id: t.client_id for t in matched}
    allowed = (
        set(owners)
        if bypass_authoriser
        else authorise(session=session, requester=requester, filter_=flt.as_dict(), owners=owners)
    )
    by = client_id_of(requester)
    to_signal: list[int] = []
    for turn in matched:
        if turn.turn_id not in allowed:
            outcome.rejected.append(turn.turn_id)
            continue
        _stop(turn, by, outcome, to_signal)
    # A sub-agent's turn goes with the turn it works for (docs/agents.md), whoever owns it:
    # the parent's cancel was allowed. One read per level (none below: one empty read);
    # none at all in a session without agents, which has no sub-agent turns (a compiled
    # read is ~1 ms of a cancel's path).
    parents = [t.pk for t in matched if t.turn_id in allowed] if session.agents else []
    while parents:
        children = list(
            Turn.objects.filter(
                session=session, parent_turn_id__in=parents, status__in=IN_FLIGHT, cancel_requested_by=""
            ).order_by("id")
        )
        for child in children:
            _stop(child, by, outcome, to_signal)
        parents = [child.pk for child in children]
    outcome.events.append(build.cancel(flt.as_dict(), by, outcome.cancelled, outcome.rejected))
    outcome.events.extend(build.turn_end(t) for t in outcome.ended)
    if to_signal:
        signals.append((str(session.pk), to_signal))
    return outcome


def _stop(turn: Turn, by: str, outcome: CancelOutcome, to_signal: list[int]) -> None:
    """Cancel one allowed turn."""
    outcome.cancelled.append(turn.turn_id)
    # A turn no worker has claimed yet (queued, or active and not picked up) ends here;
    # a claimed one is flagged and its worker stops it.
    if not turn.worker_id and transitions.end_unstarted(turn, by=by):
        outcome.ended.append(turn)
    elif transitions.request_cancel(turn, by=by):
        to_signal.append(turn.pk)


def take_held_cancels(turns: Sequence[tuple[ChatSession, str, str]]) -> dict[tuple[Any, str], str]:
    """On turn creation: which of these new turns (session, turnId, owner's clientId) have
    a held cancel waiting that may apply? Takes those held cancels (one query when none
    waits). Returns the turns to end, (session pk, turnId), each with the clientId of the
    member whose cancel it was."""
    held = HeldCancel.objects.filter(
        session_id__in={session.pk for session, _, _ in turns},
        turn_id__in={turn_id for _, turn_id, _ in turns},
        expires_at__gt=timezone.now(),
    ).select_related("requested_by")
    waiting = {(h.session_id, h.turn_id): h for h in held}
    taken: dict[tuple[Any, str], str] = {}
    for session, turn_id, owner_client_id in turns:
        cancel = waiting.get((session.pk, turn_id))
        if cancel is None:
            continue
        cancel.delete()
        allowed = authorise(
            session=session,
            requester=cancel.requested_by,
            filter_={"turnId": turn_id},
            owners={turn_id: owner_client_id},
        )
        if turn_id in allowed:
            taken[(session.pk, turn_id)] = client_id_of(cancel.requested_by)
    return taken


def _stop_turns_of_deleted_session(
    sender: Any, session: ChatSession, by: AbstractBaseUser, **kwargs: Any
) -> list[tuple[str, list[int]]]:
    """A session is being deleted (sessions/services.session_delete, under its lock): its
    turns in flight end as an operator's cancel of all of them would end them (queued and
    unclaimed ones here, claimed ones flagged), sub-agents' included. Their events are not
    published: `session.deleted` ends them all for every device. Answers the turns whose
    workers must stop."""
    signals: list[tuple[str, list[int]]] = []
    cancel_locked(session=session, requester=by, flt=CancelFilter(all=True), signals=signals, bypass_authoriser=True)
    return signals


def connect_signals() -> None:
    """Called once from the app's ready()."""
    session_deleting.connect(_stop_turns_of_deleted_session, dispatch_uid="sessions_app.stop_turns_of_deleted_session")
