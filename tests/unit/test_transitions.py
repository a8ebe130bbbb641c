"""The turn state machine (sessions_app/turns/transitions.py): each transition happens once,
from the states it names, whatever its caller holds; a second attempt reports False and
changes nothing."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model

from sessions_app.models import MessageNode, NodeStatus, Turn, TurnStatus
from sessions_app.schemas import SendBody
from sessions_app.sessions.services import session_create
from sessions_app.turns import transitions
from sessions_app.turns.sending import turn_send
from sessions_app.turns.types import TurnOutcome

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user(username=f"alice-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def chat(alice):
    return session_create(owner=alice, title="t")


def send(chat, user, policy="concurrent") -> Turn:
    body = SendBody.model_validate(
        {
            "messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
            "policy": policy,
        }
    )
    return turn_send(session_id=chat.pk, user=user, body=body).turn


def outcome(turn: Turn, status: str = TurnStatus.COMPLETE) -> TurnOutcome:
    assert turn.assistant_message is not None
    return TurnOutcome(
        turn_pk=turn.pk,
        session_id=str(turn.session_id),
        message_id=turn.assistant_message.node_id,
        status=status,
        parts=[{"type": "text", "text": "done"}],
        content_seq=7,
    )


def stored(turn: Turn) -> Turn:
    return Turn.objects.get(pk=turn.pk)


def answer_status(turn: Turn) -> str:
    return MessageNode.objects.get(pk=turn.assistant_message_id or 0).status


def test_two_workers_claiming_one_turn_only_one_gets_it(chat, alice):
    turn = send(chat, alice)
    assert [row.pk for row in transitions.claim([turn.pk], "w1")] == [turn.pk]
    assert transitions.claim([turn.pk], "w2") == []
    assert stored(turn).worker_id == "w1"


def test_a_queued_turn_is_activated_once_and_an_active_one_never(chat, alice):
    active, queued = send(chat, alice), send(chat, alice, policy="queue")
    assert not transitions.activate(active)
    assert transitions.activate(queued)
    assert not transitions.activate(Turn.objects.get(pk=queued.pk))
    assert stored(queued).status == TurnStatus.ACTIVE and answer_status(queued) == NodeStatus.STREAMING


def test_a_turn_a_worker_runs_is_not_ended_as_unstarted(chat, alice):
    unclaimed, claimed = send(chat, alice), send(chat, alice)
    transitions.claim([claimed.pk], "w1")
    assert transitions.end_unstarted(unclaimed, by="alice")
    assert not transitions.end_unstarted(Turn.objects.get(pk=claimed.pk), by="alice")
    assert stored(unclaimed).status == TurnStatus.CANCELLED and answer_status(unclaimed) == NodeStatus.CANCELLED
    assert stored(claimed).status == TurnStatus.ACTIVE and answer_status(claimed) == NodeStatus.STREAMING


def test_a_cancel_is_flagged_once_and_never_on_an_ended_turn(chat, alice):
    turn, ended = send(chat, alice), send(chat, alice)
    assert transitions.request_cancel(turn, by="alice")
    assert not transitions.request_cancel(Turn.objects.get(pk=turn.pk), by="bob")
    assert stored(turn).cancel_requested_by == "alice"
    transitions.claim([ended.pk], "w1")
    assert transitions.finish(ended, outcome(ended))
    assert not transitions.request_cancel(Turn.objects.get(pk=ended.pk), by="alice")
    assert stored(ended).cancel_requested_by == ""


def test_a_turn_finishes_once_with_its_answer(chat, alice):
    turn = send(chat, alice)
    assert transitions.finish(turn, outcome(turn, TurnStatus.CANCELLED))
    assert not transitions.finish(Turn.objects.get(pk=turn.pk), outcome(turn, TurnStatus.COMPLETE))
    node = MessageNode.objects.get(pk=turn.assistant_message_id or 0)
    assert stored(turn).status == TurnStatus.CANCELLED
    assert (node.status, node.content_seq, node.parts) == ("cancelled", 7, [{"type": "text", "text": "done"}])


def test_a_queued_turn_cannot_finish_and_a_turn_cannot_end_as_active(chat, alice):
    send(chat, alice)
    queued = send(chat, alice, policy="queue")
    assert not transitions.finish(queued, outcome(queued))
    with pytest.raises(ValueError, match="cannot end"):
        transitions.finish(queued, outcome(queued, TurnStatus.ACTIVE))
    assert stored(queued).status == TurnStatus.QUEUED
