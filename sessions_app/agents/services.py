"""Agents in sessions (docs/agents.md): adding and removing them, and starting a turn on an
agent's behalf. Site code calls these; the HTTP endpoints (web/api/agents.py) and the
management command `agent_turn` are thin wrappers.

An agent's turn is a send with the agent's clientId (turns/sending.py, `Acting`): the same
policies, cap, tree, events, held cancels and worker path as a user's turn.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from pydantic import TypeAdapter, ValidationError

from sessions_app.agents.config import Agent, configured_agents
from sessions_app.errors import Conflict, Forbidden, Invalid, NotFound
from sessions_app.events import build, emit
from sessions_app.infra.sql import unique_row
from sessions_app.models import IN_FLIGHT, ChatSession, Policy, Turn
from sessions_app.schemas import Id, SendBody
from sessions_app.sessions.services import require_member
from sessions_app.turns.locking import locked_session
from sessions_app.turns.sending import Acting, SendResult, turn_send
from sessions_app.worker.providers.base import ProviderError
from sessions_app.worker.providers.registry import check_options, is_configured

_ID = TypeAdapter(Id)


def session_agents(session: ChatSession) -> list[Agent]:
    """The configured agents of a session, in the order they were added."""
    agents = configured_agents()
    return [agents[name] for name in session.agents or () if name in agents]


def session_agent_add(*, session_id: Any, by: AbstractBaseUser, name: str) -> ChatSession:
    """Add a configured agent to a session (owner only), with its sub-agents for an
    orchestrator; adding one twice changes nothing. Every model they use must be
    configured."""
    session = require_member(session_id=session_id, user=by)
    if session.owner_id != by.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner adds agents")
    agents = configured_agents()
    if name not in agents:
        raise NotFound(f"no agent named {name!r} is configured")
    names = [name, *agents[name].sub_agents]
    for added in names:
        if not is_configured(agents[added].model):
            raise Invalid(f"agent {added!r} uses the model {agents[added].model!r}, which is not configured")
        try:  # what its provider would refuse at every one of its turns: refused now, named
            check_options(agents[added].model, agents[added].model_options())
        except ProviderError as exc:
            raise Invalid(f"agent {added!r} is configured with options its model refuses: {exc.message}") from None
    with transaction.atomic():
        session = locked_session(session.pk)
        current = list(session.agents or [])
        missing = [n for n in names if n not in current]
        if missing:
            session.agents = [*current, *missing]
            session.save(update_fields=["agents", "updated_at"])
            emit.on_commit(str(session.pk), [build.session_updated(session, by=str(by.get_username()))])
    return session


def session_agent_remove(*, session_id: Any, by: AbstractBaseUser, name: str) -> ChatSession:
    """Remove an agent from a session (owner only). Its turns in flight run to their end; an
    orchestrator of the session starts no more turns for it (turns/sending.py)."""
    session = require_member(session_id=session_id, user=by)
    if session.owner_id != by.pk:  # type: ignore[attr-defined]
        raise Forbidden("only the owner removes agents")
    with transaction.atomic():
        session = locked_session(session.pk)
        if name not in (session.agents or []):
            raise NotFound(f"agent {name!r} is not in this session")
        session.agents = [n for n in session.agents if n != name]
        session.save(update_fields=["agents", "updated_at"])
        emit.on_commit(str(session.pk), [build.session_updated(session, by=str(by.get_username()))])
    return session


def agent_turn_start(
    *,
    session_id: Any,
    agent: str,
    prompt: str | None = None,
    messages: Sequence[dict[str, Any]] | None = None,
    reply_to: str | None = None,
    turn_id: str | None = None,
    parent_turn: str | None = None,
    policy: str | None = None,
    user: AbstractBaseUser | None = None,
) -> SendResult:
    """Start a turn on behalf of `agent` (a configured agent added to the session): it
    streams to every device under the clientId `agent:<name>`, alongside the other turns,
    and is cancelled by any filter that names it.

    What it answers, one of: `prompt` (a text, added to the tree as a user message of the
    agent's), `messages` (user messages as in a send body), `reply_to` (the id of a user
    message already in the tree: the answer goes under it, beside the others). With
    `parent_turn` (the turnId of a turn in flight) the turn works for that turn: cancelling
    the parent cancels it, an orchestrator's turn waits for it, and with nothing else given
    it answers the parent's user message.

    `turn_id`: unique in the session; one already used is refused with `conflict` (agents
    that shared one would collide on every device). `policy`: as a send's; `concurrent`
    when not given. `user`: the member the agent works for (the turn's user, against whose
    send rate it counts); the session's owner when not given.
    """
    configured = configured_agents().get(agent)
    if configured is None:
        raise NotFound(f"no agent named {agent!r} is configured")
    session = _session(session_id)
    if agent not in (session.agents or []):
        raise Forbidden(f"agent {agent!r} is not in this session (add it first)")
    if turn_id is not None:
        turn_id = _checked_id(turn_id, "turnId")
        if Turn.objects.filter(session=session, turn_id=turn_id).exists():
            raise Conflict(f"turnId {turn_id!r} is already used in this session")
    if policy is not None and policy not in Policy.values:
        raise Invalid(f"policy is one of {', '.join(Policy.values)}")
    parent = _parent(session, parent_turn) if parent_turn is not None else None
    given = [what for what in (prompt, messages, reply_to) if what is not None]
    if len(given) > 1:
        raise Invalid("give one of prompt, messages, reply_to")
    if not given and parent is None:
        raise Invalid("give a prompt, messages, reply_to or a parent turn")
    if reply_to is None and not given and parent is not None:
        reply_to = parent.user_message.node_id if parent.user_message else None
    body = _body(prompt, messages, reply_to, turn_id, policy, parent)
    acting = Acting(
        client_id=configured.client_id,
        model=configured.turn_model,
        parent_turn=parent,
        reply_to=_checked_id(reply_to, "reply_to") if reply_to is not None else None,
    )
    return turn_send(session_id=session.pk, user=user or session.owner, body=body, acting=acting)


def _session(session_id: Any) -> ChatSession:
    try:
        session = unique_row(ChatSession.objects.select_related("owner").filter(pk=uuid.UUID(str(session_id))))
    except ValueError:
        session = None
    if session is None:
        raise NotFound("no such session")
    return session


def _parent(session: ChatSession, turn_id: str) -> Turn:
    parent = unique_row(Turn.objects.filter(session=session, turn_id=turn_id).select_related("user_message"))
    if parent is None:
        raise NotFound(f"no turn {turn_id!r} in this session")
    if parent.status not in IN_FLIGHT:
        raise Invalid(f"turn {turn_id!r} has ended: a sub-agent works for a turn in flight")
    return parent


def _checked_id(value: str, what: str) -> str:
    try:
        return str(_ID.validate_python(value))
    except ValidationError:
        raise Invalid(f"{what} is 1 to 100 characters of A-Z a-z 0-9 _ . : -") from None


def _body(
    prompt: str | None,
    messages: Sequence[dict[str, Any]] | None,
    reply_to: str | None,
    turn_id: str | None,
    policy: str | None,
    parent: Turn | None,
) -> SendBody:
    if reply_to is not None:
        # An answer to a message already in the tree adds no message: a body no client could
        # send (it has no messages), made here, never parsed from a request.
        return SendBody.model_construct(turn_id=turn_id, messages=[], policy=Policy(policy) if policy else None)
    if prompt is not None:
        messages = [{"id": f"m-{uuid.uuid4()}", "role": "user", "parts": [{"type": "text", "text": prompt}]}]
    # A sub-agent's own task goes under the message its parent answers.
    under = parent.user_message.node_id if parent is not None and parent.user_message else None
    try:
        return SendBody.model_validate({"turnId": turn_id, "messages": messages, "policy": policy, "parent": under})
    except ValidationError as exc:
        raise Invalid(f"bad messages: {exc.errors()[0]['msg']}") from None
