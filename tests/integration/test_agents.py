"""Agents through the real stack (Daphne, a Celery worker, Redis, real websockets): an
orchestrator's sub-agents stream at once to every device under their own turnIds and
clientIds; cancels by agent clientId, of a parent (cascading) and of one sub-agent; a turn
started for an agent by a script, and a reused turnId refused; the per-session cap; an agent
on a real provider (a local server speaking OpenAI's wire protocol) aborted mid-stream."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from chat_client import ChatClient, Device
from sessions_app.worker.orchestrator import SubAgentResult, results_text
from tests.conftest import PASSWORD
from tests.integration.helpers import assert_clean, expected_answer
from tests.providers.fakes import HANG, FakeVendor, Reply
from tests.providers.test_runner import tool_round
from tests.providers.wire import openai_text
from tests.stack import ROOT, Stack

ANALYST_SYSTEM = "You are the analyst."
AGENTS = [
    # A panel whose sub-agents answer in about two seconds, at different paces.
    {"name": "researcher", "model": "demo", "options": {"tokens": 60, "rate": 30}},
    {"name": "critic", "model": "demo", "options": {"tokens": 40, "rate": 20}},
    {"name": "panel", "model": "demo", "options": {"tokens": 20, "rate": 60}, "sub_agents": ["researcher", "critic"]},
    # A board whose sub-agents take long enough for a cancel to land mid-answer.
    {"name": "scout", "model": "demo", "options": {"tokens": 400, "rate": 40}},
    {"name": "skeptic", "model": "demo", "options": {"tokens": 60, "rate": 20}},
    {"name": "board", "model": "demo", "options": {"tokens": 12, "rate": 60}, "sub_agents": ["scout", "skeptic"]},
    # An agent on a real provider with a server-side tool, beside a demo one.
    {
        "name": "analyst",
        "model": "openai:gpt-test",
        "system": ANALYST_SYSTEM,
        "tools": ["sessions_app.worker.providers.tools_example.word_count"],
    },
    {"name": "desk", "model": "demo", "options": {"tokens": 8, "rate": 60}, "sub_agents": ["analyst", "skeptic"]},
    # A watch whose sub-agents both answer for ten seconds: they hold their places under the cap.
    {"name": "sentinel", "model": "demo", "options": {"tokens": 400, "rate": 40}},
    {"name": "watch", "model": "demo", "options": {"tokens": 8, "rate": 60}, "sub_agents": ["scout", "sentinel"]},
    # An agent a script asks: it answers for a few seconds, while the device watches it.
    {"name": "reporter", "model": "demo", "options": {"tokens": 80, "rate": 20}},
]
CAP = 6
SLOW = {"tokens": 400, "rate": 40}


@pytest_asyncio.fixture(scope="session")
async def vendor() -> AsyncIterator[FakeVendor]:
    server = await FakeVendor().start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def agent_stack(stack_factory: Callable[..., Stack], vendor: FakeVendor) -> Stack:
    return stack_factory(
        {
            "CHAT_AGENTS": json.dumps(AGENTS),
            "CHAT_MAX_ACTIVE_TURNS": str(CAP),
            "OPENAI_API_KEY": "sk-test-key",
            "OPENAI_BASE_URL": f"{vendor.url}/v1",
            "OPENAI_MODELS": "gpt-test",
            "CHAT_PROVIDER_RETRIES": "0",
        }
    )


@pytest_asyncio.fixture
async def login(agent_stack: Stack, create_user: Callable[..., str]) -> AsyncIterator[Callable[..., Any]]:
    clients: list[ChatClient] = []

    async def make(prefix: str) -> ChatClient:
        client = await ChatClient.login(agent_stack.base_url, create_user(prefix), PASSWORD)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def session_with_agent(owner: ChatClient, agent: str, *members: ChatClient, **options: Any) -> dict[str, Any]:
    session = await owner.create_session(title="agents", model_options=options)
    for member in members:
        assert member.client_id
        await owner.add_member(session["id"], member.client_id)
    await owner.request("POST", f"/api/sessions/{session['id']}/agents", json={"name": agent})
    return session


def snapshot(active: dict[str, set[str]]) -> dict[str, set[str]]:
    return {client_id: set(turn_ids) for client_id, turn_ids in active.items()}


def starts(device: Device, parent_turn_id: str) -> dict[str, str]:
    """clientId -> turnId of the sub-agent turns a device saw start for a parent turn."""
    return {
        e["clientId"]: e["turnId"] for e in device.events_of("turn.start") if e.get("parentTurnId") == parent_turn_id
    }


async def sub_agents_started(device: Device, parent_turn_id: str, count: int = 2) -> dict[str, str]:
    return await device.wait_for(lambda: (s := starts(device, parent_turn_id)) and len(s) == count and s)  # type: ignore[no-any-return]


def answer_of(device: Device, turn_id: str) -> dict[str, Any]:
    return next(m for m in device.messages.values() if m.get("turnId") == turn_id and m["role"] == "assistant")


async def first_delta(device: Device, turn_id: str) -> None:
    await device.wait_event(lambda e: e["type"] == "delta" and e["turnId"] == turn_id)


def switches(device: Device, turn_ids: set[str]) -> int:
    """How often the stream of deltas went from one of these turns to another."""
    order = [e["turnId"] for e in device.events_of("delta") if e["turnId"] in turn_ids]
    return sum(a != b for a, b in itertools.pairwise(order))


def final_answer(device: Device, question: str, sub_turns: dict[str, str], tokens: int) -> str:
    """What the orchestrator's demo model answers once it has seen its sub-agents' answers."""
    results = [
        SubAgentResult(
            turn_id=turn_id,
            client_id=client_id,
            status=device.turns[turn_id]["status"],
            text=device.text_of(answer_of(device, turn_id)["id"]),
        )
        for client_id, turn_id in sorted(sub_turns.items(), key=lambda item: answer_of(device, item[1])["createdAt"])
    ]
    return expected_answer(question + results_text(results), tokens)


async def test_sub_agents_stream_interleaved_to_every_device_then_the_orchestrator_sums_up(login):
    alice, bob = await login("alice"), await login("bob")
    session = await session_with_agent(alice, "panel", bob)
    phone, laptop = await alice.connect(session["id"]), await bob.connect(session["id"])

    parent = await phone.send("Plan a weekend in Lisbon")
    subs = await sub_agents_started(laptop, parent.turn_id)
    both_generating = await laptop.wait_for(
        lambda: {"agent:researcher", "agent:critic"} <= set(laptop.active_turns) and snapshot(laptop.active_turns)
    )
    end = await parent.end()
    await laptop.wait_turn_end(parent.turn_id)

    assert set(subs) == {"agent:researcher", "agent:critic"}
    assert both_generating["agent:researcher"] == {subs["agent:researcher"]}
    assert both_generating[alice.client_id] == {parent.turn_id}
    assert end["reason"] == "complete" and parent.ack["clientId"] == alice.client_id
    for device in (phone, laptop):
        assert starts(device, parent.turn_id) == subs
        assert switches(device, set(subs.values())) >= 2, "the two sub-agents' deltas interleave"
        for client_id, turn_id in subs.items():
            answer = answer_of(device, turn_id)
            tokens = {"agent:researcher": 60, "agent:critic": 40}[client_id]
            assert (answer["clientId"], answer["parent"], answer["status"]) == (
                client_id,
                parent.ack["userMessageId"],
                "complete",
            )
            assert device.text_of(answer["id"]) == expected_answer("Plan a weekend in Lisbon", tokens)
            assert all(e.get("clientId") in (None, client_id) for e in device.turn_events(turn_id))
        # The orchestrator's answer: a sibling of theirs, created after them, seeing their answers.
        final = device.messages[parent.ack["assistantMessageId"]]
        assert (final["parent"], final["clientId"], final["status"]) == (
            parent.ack["userMessageId"],
            "agent:panel",
            "complete",
        )
        siblings = [
            m["message"]["id"] for m in device.events_of("message") if m["message"]["parent"] == final["parent"]
        ]
        assert siblings[-1] == final["id"] and len(siblings) == 3
        ends = [e["turnId"] for e in device.events_of("turn.end")]
        assert ends.index(parent.turn_id) > max(ends.index(t) for t in subs.values())
        assert device.text_of(final["id"]) == final_answer(device, "Plan a weekend in Lisbon", subs, 20)
        assert device.active_turns == {}
    assert_clean(phone, laptop)
    turns = {t["turnId"]: t for t in await bob.turns(session["id"])}
    assert {t["parentTurnId"] for i, t in turns.items() if i != parent.turn_id} == {parent.turn_id}
    assert (turns[parent.turn_id]["parentTurnId"], turns[parent.turn_id]["model"]) == (None, "agent:panel")
    assert (await bob.session(session["id"]))["agents"] == ["panel", "researcher", "critic"]
    # The next message continues after the orchestrator's answer.
    follow = await phone.send("And on Sunday?")
    assert phone.messages[follow.ack["userMessageId"]]["parent"] == parent.ack["assistantMessageId"]
    await phone.cancel(all=True)


async def test_an_orchestrator_delegates_only_to_the_sub_agents_still_in_the_session(login):
    alice = await login("alice")
    session = await session_with_agent(alice, "panel")
    device = await alice.connect(session["id"])
    await alice.request("DELETE", f"/api/sessions/{session['id']}/agents/critic")

    parent = await device.send("Plan a weekend in Lisbon")
    assert (await parent.end())["reason"] == "complete"
    subs = starts(device, parent.turn_id)
    assert list(subs) == ["agent:researcher"]
    final = device.text_of(parent.ack["assistantMessageId"])
    assert final == final_answer(device, "Plan a weekend in Lisbon", subs, 20)  # it saw the researcher's only

    await alice.request("DELETE", f"/api/sessions/{session['id']}/agents/researcher")
    alone = await device.send("And on Sunday?")
    assert (await alone.end())["reason"] == "complete"
    assert starts(device, alone.turn_id) == {}
    # With no sub-agent left, the orchestrator answers the message itself.
    assert device.text_of(alone.ack["assistantMessageId"]) == expected_answer("And on Sunday?", 20)
    assert (await alice.session(session["id"]))["agents"] == ["panel"]
    assert_clean(device)


async def test_cancel_by_an_agents_client_id_stops_that_agents_turns_only(login):
    alice, bob = await login("alice"), await login("bob")
    session = await session_with_agent(alice, "board", bob)
    phone, laptop = await alice.connect(session["id"]), await bob.connect(session["id"])
    first, second = await phone.send("first question"), await phone.send("second question")
    boards = [await sub_agents_started(laptop, turn.turn_id) for turn in (first, second)]
    scouts = [b["agent:scout"] for b in boards]
    for scout in scouts:
        await first_delta(laptop, scout)

    answer = await laptop.cancel(client_id="agent:scout")

    assert sorted(answer["cancelled"]) == sorted(scouts) and answer["rejected"] == []
    for board, question, turn in zip(boards, ("first question", "second question"), (first, second), strict=True):
        assert (await phone.wait_turn_end(board["agent:scout"]))["reason"] == "cancelled"
        assert (await phone.wait_turn_end(board["agent:skeptic"], timeout=20))["reason"] == "complete"
        assert (await phone.wait_turn_end(turn.turn_id, timeout=20))["reason"] == "complete"
        final = phone.text_of(turn.ack["assistantMessageId"])
        assert final == final_answer(phone, question, board, 12)
    assert answer_of(phone, scouts[0])["status"] == "cancelled" and phone.text_of(answer_of(phone, scouts[0])["id"])
    assert_clean(phone, laptop)


async def test_cancelling_the_parent_turn_cancels_its_sub_agents(login):
    alice, bob = await login("alice"), await login("bob")
    session = await session_with_agent(alice, "watch", bob)
    phone, laptop = await alice.connect(session["id"]), await bob.connect(session["id"])
    parent = await phone.send("Stop it all")
    subs = await sub_agents_started(laptop, parent.turn_id)
    await first_delta(laptop, subs["agent:scout"])

    answer = await laptop.cancel(turn_id=parent.turn_id)

    assert sorted(answer["cancelled"]) == sorted([parent.turn_id, *subs.values()])
    for device in (phone, laptop):
        for turn_id in (parent.turn_id, *subs.values()):
            assert (await device.wait_turn_end(turn_id))["reason"] == "cancelled"
        await device.wait_for(lambda d=device: d.active_turns == {})
    assert_clean(phone, laptop)


async def test_cancelling_one_sub_agent_leaves_its_sibling_and_the_parent_going(login):
    alice = await login("alice")
    session = await session_with_agent(alice, "board")
    device = await alice.connect(session["id"])
    parent = await device.send("Only the scout stops")
    subs = await sub_agents_started(device, parent.turn_id)
    await first_delta(device, subs["agent:scout"])

    answer = await device.cancel(turn_id=subs["agent:scout"])

    assert answer["cancelled"] == [subs["agent:scout"]]
    assert (await device.wait_turn_end(subs["agent:scout"]))["reason"] == "cancelled"
    assert (await device.wait_turn_end(subs["agent:skeptic"], timeout=20))["reason"] == "complete"
    assert (await parent.end(timeout=20))["reason"] == "complete"
    final = device.text_of(parent.ack["assistantMessageId"])
    assert final == final_answer(device, "Only the scout stops", subs, 12)
    assert_clean(device)


def agent_turn_command(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`manage.py agent_turn` as a script on the stack's host runs it."""
    return subprocess.run(
        [sys.executable, "manage.py", "agent_turn", *args],
        env=stack.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_script_starts_an_agents_turn_every_device_sees_and_a_reused_turn_id_conflicts(login, agent_stack):
    alice, bob = await login("alice"), await login("bob")
    session = await session_with_agent(alice, "reporter", bob)
    laptop = await bob.connect(session["id"])
    # Watching from before the script runs: its turn may start while the script exits.
    watching = asyncio.create_task(
        laptop.wait_for(lambda: "agent:reporter" in laptop.active_turns and snapshot(laptop.active_turns), 60)
    )

    started = await asyncio.to_thread(
        agent_turn_command, agent_stack, session["id"], "reporter", "--prompt", "Any news?", "--turn-id", "news-1"
    )
    assert started.returncode == 0, started.stderr
    ack = json.loads(started.stdout)
    assert (ack["turnId"], ack["clientId"], ack["status"]) == ("news-1", "agent:reporter", "active")
    generating = await watching
    end = await laptop.wait_turn_end("news-1")
    repeated = await asyncio.to_thread(
        agent_turn_command, agent_stack, session["id"], "reporter", "--prompt", "Me too", "--turn-id", "news-1"
    )

    assert generating["agent:reporter"] == {"news-1"}
    assert end["reason"] == "complete" and end["clientId"] == "agent:reporter"
    assert laptop.messages[ack["userMessageId"]]["clientId"] == "agent:reporter"
    assert laptop.text_of(ack["assistantMessageId"]) == expected_answer("Any news?", 80)
    assert repeated.returncode != 0 and "conflict" in repeated.stderr
    assert [t["turnId"] for t in await alice.turns(session["id"])] == ["news-1"]
    assert_clean(laptop)


async def test_the_cap_on_active_turns_holds_and_a_turn_over_it_waits_its_turn(login):
    alice, bob = await login("alice"), await login("bob")
    session = await session_with_agent(alice, "watch", bob, **SLOW)
    phone, laptop = await alice.connect(session["id"]), await bob.connect(session["id"])
    orchestrated = await phone.send("three turns at once")  # a parent and two sub-agents
    await sub_agents_started(laptop, orchestrated.turn_id)
    running = [await laptop.send(f"turn {i}") for i in range(CAP - 3)]

    over = await laptop.send("one too many")
    queued = await laptop.wait_event(lambda e: e["type"] == "turn.queued" and e["turnId"] == over.turn_id)
    await laptop.cancel(turn_id=running[0].turn_id)
    started = await laptop.wait_event(lambda e: e["type"] == "turn.start" and e["turnId"] == over.turn_id)

    assert over.status == "queued" and queued["clientId"] == bob.client_id
    assert laptop.events.index(started) > laptop.events.index(
        next(e for e in laptop.events_of("turn.end") if e["turnId"] == running[0].turn_id)
    )
    for device in (phone, laptop):
        active: dict[str, set[str]] = {}
        most = 0
        for event in device.events:
            if event["type"] == "turn.start":
                active.setdefault(event["clientId"], set()).add(event["turnId"])
            elif event["type"] == "turn.end":
                active.get(event["clientId"], set()).discard(event["turnId"])
            most = max(most, sum(len(t) for t in active.values()))
        assert most == CAP
    await laptop.cancel(all=True)
    assert_clean(phone, laptop)


async def test_an_agent_on_a_real_provider_uses_its_prompt_and_tools_and_a_cancel_closes_its_stream(
    login, vendor: FakeVendor
):
    tool_call, _ = tool_round("openai")
    vendor.script(tool_call, Reply(stream=[*openai_text("Half an ans"), HANG]))
    alice = await login("alice")
    session = await session_with_agent(alice, "desk")
    device = await alice.connect(session["id"])
    parent = await device.send("Count: one two three")
    subs = await sub_agents_started(device, parent.turn_id)
    analyst = subs["agent:analyst"]
    await first_delta(device, analyst)
    hanging = await vendor.request(1)

    answer = await device.cancel(client_id="agent:analyst")
    end = await device.wait_turn_end(analyst, timeout=10)

    await asyncio.wait_for(hanging.closed.wait(), 5.0)  # the model's HTTP stream was closed
    assert answer["cancelled"] == [analyst] and end["reason"] == "cancelled"
    first = vendor.requests[0].json
    assert first["messages"][0] == {"role": "system", "content": ANALYST_SYSTEM}
    assert [tool["function"]["name"] for tool in first["tools"]] == ["word_count"]
    kinds = [e["type"] for e in device.turn_events(analyst)]
    assert kinds.index("tool.call") < kinds.index("tool.result") < kinds.index("delta")
    assert device.text_of(answer_of(device, analyst)["id"]) == "Half an ans"
    assert (await parent.end(timeout=20))["reason"] == "complete"
    assert device.text_of(parent.ack["assistantMessageId"]) == final_answer(device, "Count: one two three", subs, 8)
    assert_clean(device)
