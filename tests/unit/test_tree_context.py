"""Which messages a turn's model sees when exchanges ran concurrently (docs/protocol.md, "The
conversation tree"; decision 021), checked through the services a worker uses: sends, a
claim (which builds the context) and finishes."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model

from sessions_app.models import MessageNode, Turn, TurnStatus
from sessions_app.schemas import SendBody
from sessions_app.sessions.services import member_add, session_create
from sessions_app.turns.running import turn_finish, turns_claim
from sessions_app.turns.sending import SendResult, turn_send
from sessions_app.turns.types import TurnOutcome

pytestmark = pytest.mark.django_db


def user(name: str):
    return get_user_model().objects.create_user(username=f"{name}-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def people():
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    chat = session_create(owner=alice, title="room")
    for other in (bob, carol):
        member_add(session=chat, by=alice, username=other.username)
    return chat, alice, bob, carol


def send(chat, who, text: str | None = None, **extra) -> SendResult:
    body: dict = dict(extra)
    if text is not None:
        body["messages"] = [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": text}]}]
    return turn_send(session_id=chat.pk, user=who, body=SendBody.model_validate(body))


def question(result: SendResult) -> MessageNode:
    assert result.turn.user_message is not None
    return result.turn.user_message


def reply(result: SendResult) -> MessageNode:
    assert result.turn.assistant_message is not None
    return result.turn.assistant_message


def claim(result: SendResult) -> list[str]:
    """The texts of the context the worker gets for the turn, as `role: text`."""
    [claimed] = turns_claim(turn_pks=[result.turn.pk], worker_id="w")
    assert claimed is not None
    return [f"{m['role']}: {''.join(p.get('text', '') for p in m['parts'])}" for m in claimed.context]


def answer(result: SendResult, text: str, status: str = TurnStatus.COMPLETE) -> None:
    assert turn_finish(
        TurnOutcome(
            turn_pk=result.turn.pk,
            session_id=str(result.turn.session_id),
            message_id=reply(result).node_id,
            status=status,
            parts=[{"type": "text", "text": text}] if text else [],
            content_seq=0,
        )
    )


def test_a_concurrent_message_does_not_see_the_exchanges_it_ran_beside(people):
    chat, alice, bob, _carol = people
    hello = send(chat, alice, "hello")
    assert claim(hello) == ["user: hello"]
    answer(hello, "hi")
    a = send(chat, alice, "A?")
    assert claim(a) == ["user: hello", "assistant: hi", "user: A?"]
    b = send(chat, bob, "B?")  # while A is answered: a sibling of A
    answer(a, "a!")  # A ends before B starts: B still does not see it
    assert claim(b) == ["user: hello", "assistant: hi", "user: B?"]


def test_the_message_after_concurrent_exchanges_sees_all_of_them_in_the_order_sent(people):
    chat, alice, bob, carol = people
    a, b, c = send(chat, alice, "A?"), send(chat, bob, "B?"), send(chat, carol, "C?")
    assert question(a).parent_id is None and question(b).parent_id is None  # three roots
    for result in (a, b, c):
        claim(result)
    answer(c, "c!")
    answer(a, "a!")
    answer(b, "b!")
    after = send(chat, bob, "and?")
    assert claim(after) == [
        "user: A?",
        "assistant: a!",
        "user: B?",
        "assistant: b!",
        "user: C?",
        "assistant: c!",
        "user: and?",
    ]


def test_an_exchange_still_answering_or_left_empty_is_not_in_the_context(people):
    chat, alice, bob, carol = people
    a, b, c = send(chat, alice, "A?"), send(chat, bob, "B?"), send(chat, carol, "C?")
    d = send(chat, carol, "D?")
    for result in (a, b, c, d):
        claim(result)
    answer(c, "c!")
    answer(d, "", TurnStatus.CANCELLED)  # stopped before a word
    interrupt = send(chat, alice, "instead", policy="interrupt")  # b still streams
    assert question(interrupt).parent == reply(a)
    answer(a, "a-partial", TurnStatus.CANCELLED)
    assert claim(interrupt) == ["user: A?", "assistant: a-partial", "user: C?", "assistant: c!", "user: instead"]


def test_edits_and_regenerations_stay_versions_of_one_exchange(people):
    chat, alice, bob, carol = people
    a, b = send(chat, alice, "A?"), send(chat, bob, "B?")
    for result in (a, b):
        claim(result)
    answer(a, "a!")
    answer(b, "b!")
    edit = send(chat, alice, "A, better?", forkOf=question(a).node_id)
    assert claim(edit) == ["user: A, better?"]  # its own siblings (the original, B) are not context
    answer(edit, "a2!")
    again = send(chat, bob, regenerate=reply(b).node_id)
    assert claim(again) == ["user: B?"]
    answer(again, "b2!")
    after = send(chat, carol, "so?")
    # the newest version of each exchange, where its original was sent
    assert claim(after) == ["user: A, better?", "assistant: a2!", "user: B?", "assistant: b2!", "user: so?"]


def test_a_follow_up_sees_a_later_exchange_sent_beside_its_branch(people):
    chat, alice, bob, carol = people
    a, b = send(chat, alice, "A?"), send(chat, bob, "B?")
    for result in (a, b):
        claim(result)
    interrupt = send(chat, alice, "A, again", policy="interrupt")  # under A's answer; B keeps going
    answer(a, "a-partial", TurnStatus.CANCELLED)
    claim(interrupt)
    answer(b, "b!")
    answer(interrupt, "a2!")
    after = send(chat, carol, "so?", parent=reply(interrupt).node_id)
    assert claim(after) == [
        "user: A?",
        "assistant: a-partial",
        "user: B?",
        "assistant: b!",
        "user: A, again",
        "assistant: a2!",
        "user: so?",
    ]
    assert Turn.objects.filter(session=chat, status=TurnStatus.ACTIVE).count() == 1


def test_the_timeline_shows_concurrent_exchanges_in_send_order_and_one_version_of_each(people):
    """tree.timeline, which the transcript uses, reads the tree as the chat page does."""
    from sessions_app.models import MessageNode
    from sessions_app.tree import timeline

    chat, alice, bob, carol = people
    a, b, c = send(chat, alice, "A?"), send(chat, bob, "B?"), send(chat, carol, "C?")
    for result in (a, b, c):
        claim(result)
    answer(c, "c!")
    answer(a, "a!")
    answer(b, "b!")
    edit = send(chat, alice, "A, better?", forkOf=question(a).node_id)
    claim(edit)
    answer(edit, "a2!")
    after = send(chat, bob, "so?")
    claim(after)
    answer(after, "so!")

    def shown() -> list[str]:
        return [n.text for n in timeline(MessageNode.objects.filter(session=chat).order_by("pk"))]

    assert shown() == ["A, better?", "a2!", "B?", "b!", "C?", "c!", "so?", "so!"]
    assert question(after).parent == reply(edit)  # the newest settled answer: the end of the timeline
    # The conversation goes on under the first version: that version now holds the newest
    # message, so it is the one shown (and what went on under the edit is behind the pager).
    older = send(chat, alice, "more on A", parent=reply(a).node_id)
    claim(older)
    answer(older, "more!")
    assert shown() == ["A?", "a!", "B?", "b!", "C?", "c!", "more on A", "more!"]


def test_an_answer_left_empty_on_the_branch_is_skipped(people):
    chat, alice, _bob, _carol = people
    first = send(chat, alice, "first")
    claim(first)
    answer(first, "", TurnStatus.CANCELLED)  # stopped before a word
    second = send(chat, alice, "second")
    assert question(second).parent == reply(first)
    assert claim(second) == ["user: first", "user: second"]


def test_a_queued_message_follows_the_newest_send_in_flight_not_a_newer_regeneration(people):
    chat, alice, bob, carol = people
    hello = send(chat, alice, "hello")
    claim(hello)
    answer(hello, "hi")
    a = send(chat, alice, "A?")
    again = send(chat, bob, regenerate=reply(hello).node_id)  # newer than A, but no message of its own
    queued = send(chat, alice, "then?", policy="queue")
    assert question(queued).parent == reply(a)
    beside = send(chat, carol, "C?")  # a sibling of the newest message in flight: the queued one
    assert question(beside).parent == reply(a)
    assert reply(again).parent == question(hello)


def test_a_queued_message_behind_only_a_regeneration_follows_the_newest_settled_node(people):
    chat, alice, bob, _carol = people
    hello = send(chat, alice, "hello")
    claim(hello)
    answer(hello, "hi")
    send(chat, bob, regenerate=reply(hello).node_id)
    queued = send(chat, alice, "then?", policy="queue")
    assert question(queued).parent == reply(hello)
    assert queued.turn.status == TurnStatus.QUEUED  # it still waits for the regeneration
