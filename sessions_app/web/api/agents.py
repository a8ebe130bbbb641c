"""The agents endpoints of the HTTP API (docs/agents.md): the agents a deployment
configures, and a session's agents (added and removed by its owner). Each runs one service
or selector on a database thread; errors map in app.py."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from pydantic import Field

from sessions_app.agents.config import configured_agents
from sessions_app.agents.services import session_agent_add, session_agent_remove, session_agents
from sessions_app.infra.db_threads import db
from sessions_app.schemas import Command, Text
from sessions_app.sessions.services import require_member
from sessions_app.web.api.answers import AgentsAnswer
from sessions_app.web.api.app import api, json_response, no_content
from sessions_app.web.api.schemas import READ_ERRORS, SESSION_BODY_ERRORS, SESSION_ERRORS

S = "/sessions/{session_id}"


class AgentBody(Command):
    name: Text = Field(min_length=1, max_length=50)


def _user(request: HttpRequest) -> AbstractBaseUser:
    user = request.auth  # type: ignore[attr-defined]
    assert isinstance(user, AbstractBaseUser)
    return user


@api.get("/agents", response={200: AgentsAnswer, **READ_ERRORS}, tags=["agents"])
async def agents_list(request: HttpRequest) -> HttpResponse:
    """The agents this deployment configures (a session's owner may add them)."""
    return json_response({"results": [a.public() for a in configured_agents().values()]})


@api.get(S + "/agents", response={200: AgentsAnswer, **SESSION_ERRORS}, tags=["agents"])
async def session_agents_list(request: HttpRequest, session_id: Text) -> HttpResponse:
    """The session's agents."""
    return json_response(await db(_session_agents)(_user(request), session_id))


def _session_agents(user: AbstractBaseUser, session_id: str) -> dict[str, Any]:
    session = require_member(session_id=session_id, user=user)
    return {"results": [a.public() for a in session_agents(session)]}


@api.post(S + "/agents", response={201: AgentsAnswer, **SESSION_BODY_ERRORS}, tags=["agents"])
async def session_agent_new(request: HttpRequest, session_id: Text, body: AgentBody) -> HttpResponse:
    """Add an agent (owner only); an orchestrator comes with its sub-agents."""
    return json_response(await db(_add)(_user(request), session_id, body.name), status=201)


def _add(user: AbstractBaseUser, session_id: str, name: str) -> dict[str, Any]:
    session = session_agent_add(session_id=session_id, by=user, name=name)
    return {"results": [a.public() for a in session_agents(session)]}


@api.delete(S + "/agents/{name}", response={204: None, **SESSION_ERRORS}, tags=["agents"])
async def session_agent_delete(request: HttpRequest, session_id: Text, name: Text) -> HttpResponse:
    """Remove an agent (owner only); its turns in flight run to their end."""
    await db(session_agent_remove)(session_id=session_id, by=_user(request), name=name)
    return no_content()
