"""The turns list and the messages page show an answer still streaming with what it has
streamed so far (from the live buffer, as a turn's detail and a snapshot do), in one Redis
round trip for the page, and none when nothing on it streams."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
import redis
from django.contrib.auth import get_user_model

from sessions_app.events import build
from sessions_app.infra import live_state
from sessions_app.models import ChatSession, NodeStatus, TurnStatus
from sessions_app.schemas import SendBody
from sessions_app.sessions import selectors
from sessions_app.sessions.services import session_create
from sessions_app.turns.running import turn_finish, turns_claim
from sessions_app.turns.sending import SendResult, turn_send
from sessions_app.turns.types import TurnOutcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> Any:
    return get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def session(alice: Any) -> ChatSession:
    chat = session_create(owner=alice, title="t")
    live_state.start_numbering_sync(str(chat.pk))  # what the creation's commit would do
    return chat


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """`round_trips()`: the Redis round trips this thread has made since the fixture began
    (a command, or a pipeline however many commands it holds); other threads' are not
    counted."""
    mine, count = threading.get_ident(), [0]
    command, pipeline = redis.Redis.execute_command, redis.client.Pipeline.execute

    def counted_command(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
        count[0] += threading.get_ident() == mine
        return command(self, *args, **kwargs)

    def counted_pipeline(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        count[0] += threading.get_ident() == mine
        return pipeline(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)
    yield lambda: count[0]


def send(session: ChatSession, user: Any, text: str) -> SendResult:
    body = SendBody.model_validate(
        {"messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": text}]}]}
    )
    return turn_send(session_id=session.pk, user=user, body=body)


def answer_id(result: SendResult) -> str:
    assert result.turn.assistant_message is not None
    return result.turn.assistant_message.node_id


def stream(result: SendResult, *pieces: tuple[str, str]) -> int:
    """Publish deltas of `result`'s answer as its worker does (the live buffer is written by
    the same script); the seq of the last."""
    turn = result.turn
    events = [build.delta(turn.turn_id, answer_id(result), text, part) for part, text in pieces]  # type: ignore[arg-type]
    return live_state.seq_of(live_state.publish(str(turn.session_id), events)[-1])


def finish(result: SendResult, text: str) -> None:
    turn = result.turn
    turns_claim(turn_pks=[turn.pk], worker_id="w")
    assert turn_finish(
        TurnOutcome(
            turn_pk=turn.pk,
            session_id=str(turn.session_id),
            message_id=answer_id(result),
            status=TurnStatus.COMPLETE,
            parts=[{"type": "text", "text": text}],
            content_seq=0,
        )
    )


def test_the_turns_list_shows_each_streaming_answers_text_so_far_in_one_round_trip(session, alice, round_trips):
    done, first, second = send(session, alice, "one"), send(session, alice, "two"), send(session, alice, "three")
    finish(done, "a finished answer")
    stream(first, ("reasoning", "thinking... "), ("text", "Hello "), ("text", "world"))
    stream(second, ("text", "Second "))

    before = round_trips()
    listed = {t["turnId"]: t for t in selectors.turns_list(session=session, status=None)}
    assert round_trips() - before == 1  # one read for both answers in flight

    assert listed[done.turn.turn_id]["content"] == "a finished answer"
    assert listed[first.turn.turn_id]["content"] == "Hello world"  # its text parts, not its reasoning
    assert listed[second.turn.turn_id]["content"] == "Second "
    assert listed[first.turn.turn_id]["status"] == TurnStatus.ACTIVE
    # What a turn's detail shows of it.
    assert selectors.turn_detail(session=session, turn_id=first.turn.turn_id) == listed[first.turn.turn_id]
    active = selectors.turns_list(session=session, status=TurnStatus.ACTIVE)
    assert [t["content"] for t in active] == ["Hello world", "Second "]


def test_a_turns_list_with_nothing_in_flight_asks_redis_nothing(session, alice, round_trips):
    done = send(session, alice, "one")
    finish(done, "all of it")
    before = round_trips()
    [listed] = selectors.turns_list(session=session, status=None)
    assert round_trips() == before
    assert listed["content"] == "all of it"


def test_the_messages_page_shows_a_streaming_answers_parts_so_far_and_their_content_seq(session, alice, round_trips):
    done, first, second = send(session, alice, "one"), send(session, alice, "two"), send(session, alice, "three")
    finish(done, "a finished answer")
    stream(first, ("reasoning", "thinking... "), ("text", "Hello "))
    last = stream(first, ("text", "world"))
    second_seq = stream(second, ("text", "Second "))

    before = round_trips()
    page = selectors.messages_page(session=session, before=None, limit=50)
    assert round_trips() - before == 1
    nodes = {n["id"]: n for n in page["results"]}

    streaming = nodes[answer_id(first)]
    assert streaming["status"] == NodeStatus.STREAMING
    reasoning, text = {"type": "reasoning", "text": "thinking... "}, {"type": "text", "text": "Hello world"}
    assert streaming["parts"] == [reasoning, text]
    assert streaming["contentSeq"] == last  # a client skips the deltas up to it, as after a snapshot
    assert nodes[answer_id(second)]["parts"] == [{"type": "text", "text": "Second "}]
    assert nodes[answer_id(second)]["contentSeq"] == second_seq
    assert nodes[answer_id(done)]["parts"] == [{"type": "text", "text": "a finished answer"}]
    assert [n["parts"] for n in page["results"] if n["role"] == "user"][1] == [{"type": "text", "text": "two"}]


def test_a_messages_page_with_nothing_streaming_asks_redis_nothing(session, alice, round_trips):
    first, second = send(session, alice, "one"), send(session, alice, "two")
    finish(second, "the second answer")
    stream(first, ("text", "Hello"))
    before = round_trips()
    # The newest two nodes: the first turn's answer (still streaming) is older than them.
    page = selectors.messages_page(session=session, before=None, limit=2)
    assert round_trips() == before
    assert [n["parts"] for n in page["results"]] == [
        [{"type": "text", "text": "the second answer"}],
        [{"type": "text", "text": "two"}],
    ]


def test_a_sessions_detail_shows_its_active_turns_text_so_far(session, alice, round_trips):
    done, first = send(session, alice, "one"), send(session, alice, "two")
    finish(done, "all of it")
    stream(first, ("text", "Hello "), ("text", "there"))
    before = round_trips()
    detail = selectors.session_payload(session, detail=True)
    assert round_trips() - before == 2  # the session's seq, and the answer in flight
    assert [(t["turnId"], t["content"]) for t in detail["turns"]] == [(first.turn.turn_id, "Hello there")]
    finish(first, "Hello there, all")
    before = round_trips()
    assert selectors.session_payload(session, detail=True)["turns"] == []
    assert round_trips() - before == 1  # the seq only


def test_a_snapshots_turns_show_their_answers_text_so_far_from_the_read_its_messages_make(session, alice):
    done, first = send(session, alice, "one"), send(session, alice, "two")
    finish(done, "all of it")
    stream(first, ("reasoning", "hmm "), ("text", "Hello "), ("text", "there"))
    nodes, turns, _ = selectors.snapshot_rows(session_id=str(session.pk))
    snapshot = asyncio.run(selectors.build_snapshot(session_id=str(session.pk), last_seq=0, nodes=nodes, turns=turns))
    contents = {t["turnId"]: t["content"] for t in snapshot["turns"]}
    assert contents == {done.turn.turn_id: "all of it", first.turn.turn_id: "Hello there"}
    [streaming] = [m for m in snapshot["messages"] if m["id"] == answer_id(first)]
    assert streaming["parts"][-1] == {"type": "text", "text": "Hello there"}  # the same read shows both


def test_an_events_page_older_than_the_live_log_ends_where_the_log_starts(session, alice):
    """Further back than the live log keeps, the archive answers (every event but the
    deltas) up to where the log starts, then the log, deltas included: none skipped."""
    from sessions_app.events.archive import archive_many

    session_id = str(session.pk)
    live_state.publish(session_id, [build.member_left(name) for name in ("x", "y", "z")])  # seqs 1..3
    last = stream(send(session, alice, "one"), ("text", "a"), ("text", "b"), ("text", "c"))  # 4..6
    frames = live_state.read_log_sync(session_id, 0, 100)
    assert [live_state.seq_of(f) for f in frames] == [1, 2, 3, 4, 5, 6] and last == 6
    archive_many(
        {session_id: [(live_state.seq_of(f), orjson.loads(f)["type"], f) for f in frames if '"delta"' not in f]}
    )
    live_state.sync_redis().xtrim(live_state.Keys.log(session_id), minid="3-0", approximate=False)  # the log keeps 3..6

    page = selectors.events_page(session=session, after=0, limit=100)
    kinds = [(e["seq"], e["type"]) for e in page["events"]]
    assert kinds == [(1, "member.left"), (2, "member.left"), (3, "member.left"), *((s, "delta") for s in (4, 5, 6))]
    assert [e["seq"] for e in selectors.events_page(session=session, after=0, limit=4)["events"]] == [1, 2, 3, 4]
    assert page["lastSeq"] == 6
