"""Agents at the service level: configuration, agents in sessions, turns started for an
agent, the orchestrator's fan-out and tree, cascading cancels, the per-session cap, and the
worker's view of an agent's turn (no worker here: on-commit emission and dispatch do not run
inside these rolled-back tests unless captured)."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management import call_command

from sessions_app import signals
from sessions_app.agents.config import Agent, agent_name, configured_agents
from sessions_app.agents.services import agent_turn_start, session_agent_add, session_agent_remove
from sessions_app.cancellation.services import turns_cancel
from sessions_app.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited
from sessions_app.events import emit
from sessions_app.models import ChatSession, MessageNode, NodeStatus, Turn, TurnStatus
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.sessions.services import member_add, session_create
from sessions_app.turns import announce
from sessions_app.turns.running import turn_finish, turns_claim
from sessions_app.turns.sending import Acting, turn_send
from sessions_app.turns.types import ClaimedTurn, TurnOutcome
from sessions_app.worker import orchestrator
from sessions_app.worker.agent_turns import as_agent
from sessions_app.worker.orchestrator import SubAgentResult, results_text, with_results

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def example_agents(settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AGENTS": "example", "MAX_ACTIVE_TURNS": 16}


@pytest.fixture
def alice():
    return get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def bob():
    return get_user_model().objects.create_user(username=f"bob-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def session(alice, bob):
    chat = session_create(owner=alice, title="t")
    member_add(session=chat, by=alice, username=bob.username)
    return chat


@pytest.fixture
def panel(session, alice):
    return session_agent_add(session_id=session.pk, by=alice, name="panel")


def send(session, user, text="hi", **extra):
    body = SendBody.model_validate(
        {"messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}
    )
    return turn_send(session_id=session.pk, user=user, body=body)


def children_of(result):
    return list(Turn.objects.filter(parent_turn=result.turn).select_related("assistant_message").order_by("id"))


def finish(turn, status=TurnStatus.COMPLETE, text="answer"):
    turns_claim(turn_pks=[turn.pk], worker_id="w")
    turn.refresh_from_db()
    assert turn_finish(
        TurnOutcome(
            turn_pk=turn.pk,
            session_id=str(turn.session_id),
            message_id=turn.assistant_message.node_id,
            status=status,
            parts=[{"type": "text", "text": text}],
            content_seq=0,
        )
    )


# --- identity and configuration -----------------------------------------------------------


def test_a_username_cannot_hold_the_agent_prefix():
    validator = UnicodeUsernameValidator()
    with pytest.raises(ValidationError):
        validator("agent:researcher")
    validator("agent-researcher")  # what a username may be instead: never "agent:..."


def test_a_user_made_around_the_validator_cannot_act_as_an_agent(session, alice):
    sneaky = get_user_model().objects.create_user(username="agent:researcher", password="x")
    member_add(session=session, by=alice, username=sneaky.username)
    with pytest.raises(Forbidden):
        send(session, sneaky)
    with pytest.raises(Forbidden):
        turns_cancel(session_id=session.pk, user=sneaky, flt=CancelFilter(own=True))


def test_the_example_configures_a_panel_of_a_researcher_and_a_critic():
    agents = configured_agents()
    assert agents["panel"].sub_agents == ("researcher", "critic")
    assert agents["researcher"].client_id == "agent:researcher"
    assert agents["researcher"].model_options()["system"].startswith("You are the researcher")
    assert agent_name("agent:critic") == "critic" and agent_name("alice") is None


@pytest.mark.parametrize(
    "raw, message",
    [
        ('[{"name": "Bad Name"}]', "name"),
        ('[{"name": "a", "sub_agents": ["missing"]}]', "not configured"),
        ('[{"name": "a", "colour": "red"}]', "unknown key"),
        ('[{"name": "a"}, {"name": "a"}]', "twice"),
        ("not json", "neither"),
    ],
)
def test_a_wrong_agent_configuration_says_what_is_wrong(settings, raw, message):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AGENTS": raw}
    with pytest.raises(ImproperlyConfigured, match=message):
        configured_agents()


def test_agents_from_a_list_in_the_settings(settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AGENTS": [{"name": "solo", "model": "demo", "tools": []}]}
    assert configured_agents() == {"solo": Agent(name="solo", tools=())}


# --- agents in sessions -------------------------------------------------------------------


def test_an_agent_configured_with_options_its_model_refuses_is_not_added(session, alice, settings):
    """Its every turn would end `provider_bad_request`: the owner hears why when adding it."""
    settings.SESSIONS_APP = {
        **settings.SESSIONS_APP,
        "AGENTS": [
            {"name": "lead", "model": "demo", "sub_agents": ["hasty"]},
            {"name": "hasty", "model": "demo", "options": {"rate": "fast"}},
            {"name": "steady", "model": "demo", "options": {"rate": 5}},
        ],
    }
    for name in ("hasty", "lead"):  # itself, or as an orchestrator's sub-agent
        with pytest.raises(Invalid, match=r"'hasty' is configured with options its model refuses.*rate"):
            session_agent_add(session_id=session.pk, by=alice, name=name)
    assert ChatSession.objects.get(pk=session.pk).agents == []
    assert session_agent_add(session_id=session.pk, by=alice, name="steady").agents == ["steady"]


def test_the_owner_adds_an_orchestrator_with_its_sub_agents(session, alice, bob):
    with pytest.raises(Forbidden):
        session_agent_add(session_id=session.pk, by=bob, name="panel")
    with pytest.raises(NotFound):
        session_agent_add(session_id=session.pk, by=alice, name="nobody")
    session_agent_add(session_id=session.pk, by=alice, name="panel")
    session_agent_add(session_id=session.pk, by=alice, name="critic")  # already in: no change
    assert ChatSession.objects.get(pk=session.pk).agents == ["panel", "researcher", "critic"]
    session_agent_remove(session_id=session.pk, by=alice, name="panel")
    assert ChatSession.objects.get(pk=session.pk).agents == ["researcher", "critic"]


# --- the orchestrator's fan-out and the tree ----------------------------------------------


def test_a_message_to_an_orchestrated_session_starts_a_parent_turn_and_one_per_sub_agent(panel, alice):
    result = send(panel, alice, "plan a trip")
    parent = result.turn
    children = children_of(result)

    assert (parent.client_id, parent.model, parent.status) == (alice.username, "agent:panel", TurnStatus.ACTIVE)
    assert [c.client_id for c in children] == ["agent:researcher", "agent:critic"]
    assert all(c.status == TurnStatus.ACTIVE and c.model == c.client_id for c in children)
    assert len({parent.turn_id, *(c.turn_id for c in children)}) == 3
    # Their answers are siblings under the message; the orchestrator's is the newest of them.
    question = parent.user_message
    answers = list(MessageNode.objects.filter(parent=question).order_by("id"))
    assert [a.client_id for a in answers] == ["agent:researcher", "agent:critic", "agent:panel"]
    assert answers[-1] == parent.assistant_message
    assert [c.assistant_message for c in children] == answers[:2]
    assert all(c.user_message == question for c in children)


def test_the_next_message_follows_the_orchestrators_final_answer(panel, alice):
    first = send(panel, alice)
    for child in children_of(first):
        finish(child)
    finish(first.turn)
    after = send(panel, alice, "and then?")
    assert after.turn.user_message.parent == first.turn.assistant_message


def test_while_an_orchestration_runs_a_message_is_a_sibling_of_its_question(panel, alice, bob):
    first = send(panel, alice)
    other = send(panel, bob)
    assert other.turn.user_message.parent_id == first.turn.user_message.parent_id


def test_sub_agent_turns_carry_their_parent_on_their_events(
    panel, alice, monkeypatch, django_capture_on_commit_callbacks
):
    published: list[dict[str, Any]] = []
    monkeypatch.setattr(emit, "many_now", lambda batches: published.extend(e for _, b in batches for e in b))
    monkeypatch.setattr(announce, "run", lambda pks: None)
    with django_capture_on_commit_callbacks(execute=True):
        result = send(panel, alice)
    starts = [e for e in published if e["type"] == "turn.start"]
    assert [(e["clientId"], e.get("parentTurnId")) for e in starts] == [
        (alice.username, None),
        ("agent:researcher", result.turn.turn_id),
        ("agent:critic", result.turn.turn_id),
    ]
    messages = [e["message"] for e in published if e["type"] == "message"]
    children = {c.turn_id for c in children_of(result)}
    assert {m["turnId"] for m in messages if m["clientId"].startswith("agent:") and m["role"] == "assistant"} == {
        *children,
        result.turn.turn_id,
    }


# --- cancelling ----------------------------------------------------------------------------


def test_cancelling_the_parent_cancels_its_sub_agent_turns(panel, alice, bob):
    result = send(panel, alice)
    children = children_of(result)
    turns_claim(turn_pks=[result.turn.pk, children[0].pk], worker_id="w")  # one claimed, one not yet

    outcome = turns_cancel(session_id=panel.pk, user=bob, flt=CancelFilter(turn_id=result.turn.turn_id))

    assert outcome.cancelled == [result.turn.turn_id, *(c.turn_id for c in children)]
    assert Turn.objects.get(pk=children[0].pk).cancel_requested_by == bob.username  # its worker stops it
    assert Turn.objects.get(pk=children[1].pk).status == TurnStatus.CANCELLED  # never started


def test_cancelling_one_sub_agent_leaves_its_sibling_and_the_parent_going(panel, alice):
    result = send(panel, alice)
    researcher, critic = children_of(result)
    turns_claim(turn_pks=[result.turn.pk, researcher.pk, critic.pk], worker_id="w")

    outcome = turns_cancel(session_id=panel.pk, user=alice, flt=CancelFilter(turn_id=researcher.turn_id))

    assert outcome.cancelled == [researcher.turn_id]
    assert Turn.objects.get(pk=critic.pk).cancel_requested_by == ""
    assert Turn.objects.get(pk=result.turn.pk).cancel_requested_by == ""


def test_cancel_by_an_agents_client_id_stops_that_agents_turns_only(panel, alice):
    first, second = send(panel, alice), send(panel, alice)
    outcome = turns_cancel(session_id=panel.pk, user=alice, flt=CancelFilter(client_id="agent:critic"))
    critics = [c.turn_id for r in (first, second) for c in children_of(r) if c.client_id == "agent:critic"]
    assert sorted(outcome.cancelled) == sorted(critics)
    assert Turn.objects.filter(session=panel, status=TurnStatus.ACTIVE).count() == 4  # 2 parents, 2 researchers


def test_a_users_own_cancel_stops_their_orchestrated_turn_and_its_sub_agents(panel, alice):
    result = send(panel, alice)
    outcome = turns_cancel(session_id=panel.pk, user=alice, flt=CancelFilter(own=True))
    assert len(outcome.cancelled) == 3
    assert not Turn.objects.filter(session=panel, status__in=["queued", "active"]).exists()
    assert result.turn.turn_id in outcome.cancelled


def test_a_held_cancel_of_an_orchestrated_turn_ends_its_sub_agents_too(panel, alice):
    turns_cancel(session_id=panel.pk, user=alice, flt=CancelFilter(turn_id="early"))
    result = send(panel, alice, turnId="early")
    assert Turn.objects.get(pk=result.turn.pk).status == TurnStatus.CANCELLED
    assert {c.status for c in children_of(result)} == {TurnStatus.CANCELLED}
    assert {c.assistant_message.status for c in children_of(result)} == {NodeStatus.CANCELLED}


def test_an_interrupt_stops_the_senders_orchestration_and_starts_the_new_one_with_its_sub_agents(panel, alice):
    first = send(panel, alice)
    turns_claim(turn_pks=[first.turn.pk, *(c.pk for c in children_of(first))], worker_id="w")
    new = send(panel, alice, policy="interrupt")
    assert new.turn.status == TurnStatus.QUEUED  # until the worker has stopped the turn it interrupts
    assert {c.status for c in children_of(new)} == {TurnStatus.QUEUED}
    assert {Turn.objects.get(pk=c.pk).cancel_requested_by for c in children_of(first)} == {alice.username}
    assert new.turn.user_message.parent == first.turn.assistant_message  # after the orchestrator's answer

    finish(Turn.objects.get(pk=first.turn.pk), TurnStatus.CANCELLED)

    assert Turn.objects.get(pk=new.turn.pk).status == TurnStatus.ACTIVE
    assert {c.status for c in children_of(new)} == {TurnStatus.ACTIVE}


# --- turns started for an agent ------------------------------------------------------------


def test_site_code_starts_an_agents_turn_under_its_client_id(panel, alice):
    result = agent_turn_start(session_id=panel.pk, agent="researcher", prompt="what is new?", turn_id="r-1")
    turn: Any = result.turn
    assert (turn.turn_id, turn.client_id, turn.model, turn.status) == (
        "r-1",
        "agent:researcher",
        "agent:researcher",
        TurnStatus.ACTIVE,
    )
    assert turn.user_id == alice.pk  # works for the owner by default
    assert turn.user_message.client_id == "agent:researcher" and turn.user_message.text == "what is new?"
    assert turn.assistant_message.parent == turn.user_message


def test_a_reused_turn_id_is_refused_with_conflict(panel, alice):
    user_turn = send(panel, alice, turnId="taken")
    with pytest.raises(Conflict):
        agent_turn_start(session_id=panel.pk, agent="critic", prompt="x", turn_id="taken")
    agent_turn_start(session_id=panel.pk, agent="critic", prompt="x", turn_id="mine")
    with pytest.raises(Conflict):
        agent_turn_start(session_id=panel.pk, agent="researcher", prompt="x", turn_id="mine")
    # Also when two starts race past the first check: the send path refuses the repeat.
    acting = Acting(client_id="agent:researcher", model="agent:researcher")
    body = SendBody.model_validate(
        {"turnId": "mine", "messages": [{"id": "fresh", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
    )
    with pytest.raises(Conflict):
        turn_send(session_id=panel.pk, user=alice, body=body, acting=acting)
    assert Turn.objects.filter(session=panel, turn_id__in=["taken", "mine"]).count() == 2
    assert user_turn.turn.client_id == alice.username


def test_an_agent_not_in_the_session_or_not_configured_cannot_start(session, alice):
    with pytest.raises(Forbidden):
        agent_turn_start(session_id=session.pk, agent="researcher", prompt="x")
    with pytest.raises(NotFound):
        agent_turn_start(session_id=session.pk, agent="nobody", prompt="x")
    with pytest.raises(NotFound):
        agent_turn_start(session_id=uuid.uuid4(), agent="researcher", prompt="x")


def test_a_sub_agent_started_for_a_parent_answers_its_message_and_goes_with_it(panel, alice):
    parent = send(panel, alice)
    extra: Any = agent_turn_start(session_id=panel.pk, agent="critic", parent_turn=parent.turn.turn_id).turn
    assert extra.parent_turn == parent.turn
    assert extra.assistant_message.parent == parent.turn.user_message
    assert extra.user_message == parent.turn.user_message
    outcome = turns_cancel(session_id=panel.pk, user=alice, flt=CancelFilter(turn_id=parent.turn.turn_id))
    assert extra.turn_id in outcome.cancelled
    with pytest.raises(Invalid):  # a parent that has ended has nothing to work for
        agent_turn_start(session_id=panel.pk, agent="critic", parent_turn=parent.turn.turn_id)


def test_regenerating_a_sub_agents_answer_asks_that_agent_again(panel, alice):
    first = send(panel, alice)
    researcher, _critic = children_of(first)
    finish(researcher)
    again: Any = turn_send(
        session_id=panel.pk,
        user=alice,
        body=SendBody.model_validate({"regenerate": researcher.assistant_message.node_id}),
    )
    assert (again.turn.client_id, again.turn.model) == ("agent:researcher", "agent:researcher")
    assert again.turn.assistant_message.fork_of == researcher.assistant_message
    assert not children_of(again)


def test_an_orchestrator_runs_only_the_sub_agents_still_in_the_session(panel, alice, settings):
    session_agent_remove(session_id=panel.pk, by=alice, name="critic")
    result = send(panel, alice)
    assert result.turn.model == "agent:panel"  # the orchestrator still answers, with whom it has
    assert [c.client_id for c in children_of(result)] == ["agent:researcher"]
    answers = MessageNode.objects.filter(parent=result.turn.user_message).order_by("id")
    assert [a.client_id for a in answers] == ["agent:researcher", "agent:panel"]
    # Room for the two turns it starts, not for the critic's as well.
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 4}
    assert send(panel, alice).turn.status == TurnStatus.ACTIVE

    session_agent_remove(session_id=panel.pk, by=alice, name="researcher")
    alone = send(panel, alice)
    assert alone.turn.model == "agent:panel" and not children_of(alone)
    # Adding the orchestrator again brings its sub-agents back.
    session_agent_add(session_id=panel.pk, by=alice, name="panel")
    assert [c.client_id for c in children_of(send(panel, alice))] == ["agent:researcher", "agent:critic"]


def test_regenerating_the_answer_of_a_sub_agent_removed_since_does_not_ask_it(panel, alice):
    first = send(panel, alice)
    researcher, _critic = children_of(first)
    finish(researcher)
    session_agent_remove(session_id=panel.pk, by=alice, name="researcher")
    again: Any = turn_send(
        session_id=panel.pk,
        user=alice,
        body=SendBody.model_validate({"regenerate": researcher.assistant_message.node_id}),
    )
    # Answered as a message is now: by the orchestrator, with the sub-agent still there.
    assert (again.turn.client_id, again.turn.model) == (alice.username, "agent:panel")
    assert again.turn.assistant_message.fork_of == researcher.assistant_message
    assert [c.client_id for c in children_of(again)] == ["agent:critic"]


def test_the_agent_turn_command_starts_a_turn_for_a_script(panel):
    out = io.StringIO()
    call_command("agent_turn", str(panel.pk), "critic", "--prompt", "any risks?", "--turn-id", "cli-1", stdout=out)
    answer = json.loads(out.getvalue())
    assert (answer["turnId"], answer["clientId"], answer["status"]) == ("cli-1", "agent:critic", "active")


# --- the cap on active turns ---------------------------------------------------------------


def test_beyond_the_cap_a_send_queues_and_starts_when_a_turn_ends(session, alice, bob, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 2}
    first, second = send(session, alice), send(session, bob)
    third = send(session, alice)
    assert third.turn.status == TurnStatus.QUEUED
    assert third.turn.user_message.parent_id == first.turn.user_message.parent_id  # concurrent, not appended
    finish(first.turn)
    assert Turn.objects.get(pk=third.turn.pk).status == TurnStatus.ACTIVE
    assert Turn.objects.get(pk=second.turn.pk).status == TurnStatus.ACTIVE


def test_beyond_the_cap_a_send_is_refused_when_the_overflow_rule_rejects(session, alice, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 1, "ACTIVE_TURNS_OVERFLOW": "reject"}
    send(session, alice)
    with pytest.raises(RateLimited):
        send(session, alice)
    assert Turn.objects.filter(session=session).count() == 1


def test_an_orchestrated_send_counts_its_sub_agents_against_the_cap(panel, alice, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 4}
    send(panel, alice)  # 3 active
    queued = send(panel, alice)  # 3 more would make 6
    assert queued.turn.status == TurnStatus.QUEUED
    assert {c.status for c in children_of(queued)} == {TurnStatus.QUEUED}
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "ACTIVE_TURNS_OVERFLOW": "reject"}
    assert agent_turn_start(session_id=panel.pk, agent="critic", prompt="x").turn.status == TurnStatus.ACTIVE  # 4
    with pytest.raises(RateLimited):  # an agent's turn is held to the cap like any
        agent_turn_start(session_id=panel.pk, agent="critic", prompt="y")


def test_a_queued_orchestrated_send_starts_with_its_sub_agents(panel, alice, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 3}
    running = send(panel, alice)
    queued = send(panel, alice)
    researcher, critic = children_of(running)
    finish(researcher)
    assert Turn.objects.get(pk=queued.turn.pk).status == TurnStatus.QUEUED  # 2 active + 3 > 3: it waits whole
    finish(critic)
    finish(running.turn)
    assert Turn.objects.get(pk=queued.turn.pk).status == TurnStatus.ACTIVE
    assert {c.status for c in children_of(queued)} == {TurnStatus.ACTIVE}
    assert {c.assistant_message.status for c in children_of(queued)} == {NodeStatus.STREAMING}


def test_the_queue_policy_queues_an_orchestrated_send_with_its_sub_agents(panel, alice):
    running = send(panel, alice)
    queued = send(panel, alice, policy="queue")
    assert queued.turn.status == TurnStatus.QUEUED
    assert {c.status for c in children_of(queued)} == {TurnStatus.QUEUED}
    for child in children_of(running):
        finish(child)
    finish(running.turn)
    assert {c.status for c in children_of(queued)} == {TurnStatus.ACTIVE}


# --- the worker's view of an agent's turn ---------------------------------------------------


def claimed(model: str, context: list[dict[str, Any]] | None = None) -> ClaimedTurn:
    return ClaimedTurn(
        pk=0,
        session_id=str(uuid.uuid4()),
        turn_id="t",
        client_id="x",
        model=model,
        model_options={},
        assistant_message_id="a",
        cancel_requested=False,
        context=context or [{"role": "user", "parts": [{"type": "text", "text": "q"}]}],
    )


async def test_an_agents_turn_runs_with_its_agents_model_prompt_and_options():
    turn, tools = await as_agent(claimed("agent:critic"))
    assert turn.model == "demo"
    assert turn.model_options["system"].startswith("You are the critic")
    assert turn.model_options["rate"] == 18
    assert tools is None  # the TOOLS setting's
    plain, none = await as_agent(claimed("demo"))
    assert plain.model == "demo" and none is None


async def test_an_orchestrators_turn_sees_its_sub_agents_answers(monkeypatch):
    results = [
        SubAgentResult("r", "agent:researcher", "complete", "facts"),
        SubAgentResult("c", "agent:critic", "cancelled", "half"),
    ]

    async def done(turn):
        return results

    monkeypatch.setattr(orchestrator, "sub_agent_results", done)
    turn, _ = await as_agent(claimed("agent:panel"))
    text = "".join(p["text"] for p in turn.context[-1]["parts"])
    assert text == "q" + results_text(results)
    assert "[researcher]\nfacts" in text and "[critic] (stopped before it finished)\nhalf" in text
    assert with_results([], results)[0]["role"] == "user"


async def test_an_orchestrator_with_no_sub_agent_turn_answers_the_message_alone(monkeypatch):
    async def none(turn):
        return []

    monkeypatch.setattr(orchestrator, "sub_agent_results", none)
    question = claimed("agent:panel")
    turn, _ = await as_agent(question)
    assert turn.context == question.context  # no "Your sub-agents answered" block to sum up
    assert turn.model == "demo"


async def test_the_end_of_a_sub_agent_turn_in_this_process_wakes_its_orchestrator(monkeypatch):
    """No read every second needed when the sub-agent ends here: its end signal wakes the wait."""
    first_read = threading.Event()
    reads = [
        [SubAgentResult("r", "agent:researcher", "active", "")],
        [SubAgentResult("r", "agent:researcher", "complete", "x")],
    ]

    def sub_agent_turns(parent_pk):
        first_read.set()
        return reads.pop(0)

    monkeypatch.setattr(orchestrator, "sub_agent_turns", sub_agent_turns)
    monkeypatch.setattr(orchestrator, "RECHECK_SECONDS", 600.0)
    parent = claimed("agent:panel")
    parent.pk = 4141
    waiting = asyncio.create_task(orchestrator.sub_agent_results(parent))
    assert await asyncio.to_thread(first_read.wait, 10)

    ended = Turn(turn_id="r", parent_turn_id=4141, status=TurnStatus.COMPLETE)
    await asyncio.to_thread(signals.turn_ended.send, sender=Turn, turn=ended, reason="complete")

    results = await asyncio.wait_for(waiting, 10)
    assert [r.status for r in results] == ["complete"]
    assert 4141 not in orchestrator._waiters


def test_every_device_hears_when_the_owner_adds_or_removes_an_agent(
    session, alice, monkeypatch, django_capture_on_commit_callbacks
):
    told: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        emit,
        "now",
        lambda _sid, batch: told.extend((e["type"], e["agents"]) for e in batch if e["type"] == "session.updated"),
    )
    with django_capture_on_commit_callbacks(execute=True):
        session_agent_add(session_id=session.pk, by=alice, name="panel")
    with django_capture_on_commit_callbacks(execute=True):
        session_agent_add(session_id=session.pk, by=alice, name="panel")  # changes nothing: no word
    with django_capture_on_commit_callbacks(execute=True):
        session_agent_remove(session_id=session.pk, by=alice, name="critic")
    panel = ChatSession.objects.get(pk=session.pk).agents
    assert told == [("session.updated", [*panel, "critic"]), ("session.updated", panel)]
