"""The turn state machine, policies, the tree and cancellation, at the service level (no
worker: on-commit emission and dispatch do not run inside these rolled-back tests)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from sessions_app.cancellation.authorisers import CancelRequest, turn_owner_only, turn_owner_or_session_owner
from sessions_app.cancellation.services import CancelCommand, CancelOutcome, turns_cancel, turns_cancel_many
from sessions_app.errors import Busy, Conflict, Forbidden, NotFound, QueueFull
from sessions_app.events import emit
from sessions_app.events.archive import archive_many
from sessions_app.infra import live_state
from sessions_app.models import ChatSession, Membership, MessageNode, NodeStatus, Turn, TurnStatus
from sessions_app.schemas import CancelFilter, SendBody
from sessions_app.sessions.services import member_add, session_create
from sessions_app.turns import announce, send_rate
from sessions_app.turns.running import overdue_interrupts, turn_finish, turns_claim, turns_fail_lost, turns_finish
from sessions_app.turns.sending import SendRequest, turn_send, turns_send
from sessions_app.turns.types import TurnOutcome

pytestmark = pytest.mark.django_db


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


def send(session, user, text="hi", **extra):
    body = SendBody.model_validate(
        {
            "messages": [
                {"id": extra.pop("id", str(uuid.uuid4())), "role": "user", "parts": [{"type": "text", "text": text}]}
            ],
            **extra,
        }
    )
    return turn_send(session_id=session.pk, user=user, body=body)


def send_many(session, user, texts, ids=None):
    """One send of several messages (fresh ids unless given)."""
    ids = ids or [str(uuid.uuid4()) for _ in texts]
    messages = [
        {"id": i, "role": "user", "parts": [{"type": "text", "text": t}]} for i, t in zip(ids, texts, strict=True)
    ]
    return turn_send(session_id=session.pk, user=user, body=SendBody.model_validate({"messages": messages}))


def turn_claim(*, turn_pk, worker_id):
    return turns_claim(turn_pks=[turn_pk], worker_id=worker_id)[0]


def ended(result, status=TurnStatus.COMPLETE, parts=(), content_seq=0):
    """The outcome a worker reports for the turn a send started."""
    return TurnOutcome(
        turn_pk=result.turn.pk,
        session_id=str(result.turn.session_id),
        message_id=result.turn.assistant_message.node_id,
        status=status,
        parts=list(parts),
        content_seq=content_seq,
    )


def finish(result, status=TurnStatus.COMPLETE, text="answer"):
    turn_claim(turn_pk=result.turn.pk, worker_id="w")
    assert turn_finish(ended(result, status, [{"type": "text", "text": text}]))


def test_double_texting_makes_siblings_and_the_next_message_follows_the_newest_answer(session, alice, bob):
    first = send(session, alice)
    finish(first)
    a, b = send(session, alice), send(session, bob)
    assert a.turn.user_message.parent == b.turn.user_message.parent == first.turn.assistant_message
    finish(a)
    finish(b)
    after = send(session, alice)
    assert after.turn.user_message.parent == b.turn.assistant_message


def test_queue_appends_after_the_turn_it_waits_for_and_promotes_fifo(session, alice):
    running = send(session, alice, policy="queue")
    second = send(session, alice, policy="queue")
    third = send(session, alice, policy="queue")
    assert (second.turn.status, third.turn.status) == (TurnStatus.QUEUED, TurnStatus.QUEUED)
    assert second.turn.user_message.parent == running.turn.assistant_message
    assert third.turn.user_message.parent == second.turn.assistant_message
    finish(running)
    assert Turn.objects.get(pk=second.turn.pk).status == TurnStatus.ACTIVE
    assert Turn.objects.get(pk=third.turn.pk).status == TurnStatus.QUEUED
    assert MessageNode.objects.get(pk=second.turn.assistant_message.pk).status == NodeStatus.STREAMING


def test_the_queue_is_bounded(session, alice, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "QUEUE_LIMIT": 2}
    send(session, alice)
    send(session, alice, policy="queue")
    send(session, alice, policy="queue")
    with pytest.raises(QueueFull):
        send(session, alice, policy="queue")


def test_reject_refuses_while_busy(session, alice, bob):
    send(session, alice)
    with pytest.raises(Busy):
        send(session, bob, policy="reject")


def test_interrupt_cancels_only_the_senders_active_turns_and_follows_the_partial_answer(session, alice, bob):
    mine, theirs = send(session, alice), send(session, bob)
    for result in (mine, theirs):
        turn_claim(turn_pk=result.turn.pk, worker_id="w")
    new = send(session, alice, policy="interrupt")
    assert Turn.objects.get(pk=mine.turn.pk).cancel_requested_by == alice.username
    assert Turn.objects.get(pk=theirs.turn.pk).cancel_requested_by == ""
    assert new.turn.status == TurnStatus.QUEUED  # until the worker has stopped `mine`
    assert new.turn.user_message.parent == mine.turn.assistant_message


def test_an_interrupting_turn_starts_when_the_turn_it_interrupts_ends_and_after_its_end(
    session, alice, bob, monkeypatch, django_capture_on_commit_callbacks
):
    """Every device sees the interrupted turn's `turn.end` before the new `turn.start`;
    another member's turn still streaming does not hold the new turn back."""
    mine, theirs = send(session, alice), send(session, bob)
    for result in (mine, theirs):
        turn_claim(turn_pk=result.turn.pk, worker_id="w")
    new = send(session, alice, policy="interrupt")
    published: list[list[tuple[str, str]]] = []
    monkeypatch.setattr(emit, "now", lambda _sid, batch: published.append([(e["type"], e["turnId"]) for e in batch]))
    dispatched: list[list[int]] = []
    monkeypatch.setattr(announce, "run", lambda pks: dispatched.append(list(pks)))

    with django_capture_on_commit_callbacks(execute=True):
        assert turn_finish(ended(mine, TurnStatus.CANCELLED))

    assert published == [[("turn.end", mine.turn.turn_id), ("turn.start", new.turn.turn_id)]]
    assert dispatched == [[new.turn.pk]]
    assert Turn.objects.get(pk=new.turn.pk).status == TurnStatus.ACTIVE
    assert Turn.objects.get(pk=theirs.turn.pk).status == TurnStatus.ACTIVE


def test_a_second_interrupt_supersedes_the_first_still_waiting_and_only_it_starts(
    session, alice, django_capture_on_commit_callbacks
):
    """Two devices of one member interrupt at once: the newest message is the one answered.
    The first interrupt's turn, still waiting for the streaming turn to stop, ends
    `cancelled`; the second waits for that same turn, follows its answer, and starts alone."""
    mine = send(session, alice)
    turn_claim(turn_pk=mine.turn.pk, worker_id="w")
    first = send(session, alice, policy="interrupt")
    second = send(session, alice, policy="interrupt")
    assert Turn.objects.get(pk=first.turn.pk).status == TurnStatus.CANCELLED
    assert second.turn.status == TurnStatus.QUEUED  # until the worker has stopped `mine`
    assert second.turn.user_message.parent == mine.turn.assistant_message
    with django_capture_on_commit_callbacks(execute=True):
        assert turn_finish(ended(mine, TurnStatus.CANCELLED))
    statuses = dict(Turn.objects.filter(session=session).values_list("turn_id", "status"))
    assert statuses == {
        mine.turn.turn_id: TurnStatus.CANCELLED,
        first.turn.turn_id: TurnStatus.CANCELLED,
        second.turn.turn_id: TurnStatus.ACTIVE,
    }


def test_interrupting_a_turn_no_worker_has_claimed_ends_it_and_starts_at_once(session, alice):
    mine = send(session, alice)
    new = send(session, alice, policy="interrupt")
    assert Turn.objects.get(pk=mine.turn.pk).status == TurnStatus.CANCELLED
    assert new.turn.status == TurnStatus.ACTIVE


def test_an_interrupt_waits_no_longer_than_its_bound_for_a_worker_that_does_not_stop(session, alice):
    mine = send(session, alice)
    turn_claim(turn_pk=mine.turn.pk, worker_id="stuck")
    new = send(session, alice, policy="interrupt")
    assert overdue_interrupts(older_than_seconds=60) == []  # not overdue yet
    assert Turn.objects.get(pk=new.turn.pk).status == TurnStatus.QUEUED

    assert overdue_interrupts(older_than_seconds=0) == [mine.turn.turn_id]

    assert Turn.objects.get(pk=mine.turn.pk).status == TurnStatus.CANCELLED
    assert Turn.objects.get(pk=new.turn.pk).status == TurnStatus.ACTIVE


def test_a_repeated_send_returns_the_existing_turn_and_a_reused_id_conflicts(session, alice):
    first = send(session, alice, id="m1")
    again = send(session, alice, id="m1")
    assert again.turn.pk == first.turn.pk and not again.created
    with pytest.raises(Conflict):
        send(session, alice, text="other", id="m1")
    assert Turn.objects.filter(session=session).count() == 1


def test_a_held_cancel_ends_the_turn_at_creation(session, alice):
    outcome = turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(turn_id="later"))
    assert outcome.pending == ["later"]
    result = send(session, alice, turnId="later")
    assert Turn.objects.get(pk=result.turn.pk).status == TurnStatus.CANCELLED
    assert turn_claim(turn_pk=result.turn.pk, worker_id="w") is None  # the model is never called


def test_a_held_cancel_names_the_member_who_cancelled_not_the_sender(session, alice, bob):
    assert turns_cancel(session_id=session.pk, user=bob, flt=CancelFilter(turn_id="later")).pending == ["later"]
    result = send(session, alice, turnId="later")
    turn = Turn.objects.get(pk=result.turn.pk)
    assert (turn.status, turn.cancel_requested_by) == (TurnStatus.CANCELLED, bob.username)


def test_cancelling_a_queued_turn_ends_it_and_an_active_one_asks_its_worker(session, alice):
    active, queued = send(session, alice), send(session, alice, policy="queue")
    turn_claim(turn_pk=active.turn.pk, worker_id="w")
    outcome = turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(all=True))
    assert sorted(outcome.cancelled) == sorted([active.turn.turn_id, queued.turn.turn_id])
    assert Turn.objects.get(pk=queued.turn.pk).status == TurnStatus.CANCELLED
    assert Turn.objects.get(pk=active.turn.pk).status == TurnStatus.ACTIVE  # until its worker ends it
    assert turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(all=True)).cancelled == []


def test_a_turn_is_claimed_once_and_ended_once(session, alice):
    result = send(session, alice)
    assert turn_claim(turn_pk=result.turn.pk, worker_id="w1") is not None
    assert turn_claim(turn_pk=result.turn.pk, worker_id="w2") is None
    assert turn_finish(ended(result, "complete"))
    assert not turn_finish(ended(result, "error"))
    assert Turn.objects.get(pk=result.turn.pk).status == "complete"


def test_turns_of_a_lost_worker_end_with_worker_lost(session, alice):
    result = send(session, alice)
    turn_claim(turn_pk=result.turn.pk, worker_id="site-a/dead-worker")
    assert turns_fail_lost(live_workers=set(), scope="site-b/") == []  # not this deployment's worker
    assert turns_fail_lost(live_workers={"site-a/other"}, scope="site-a/") == [result.turn.turn_id]
    turn = Turn.objects.get(pk=result.turn.pk)
    assert (turn.status, turn.error_code) == (TurnStatus.ERROR, "worker_lost")


def test_non_members_cannot_send_or_cancel(session):
    stranger = get_user_model().objects.create_user(username=f"s-{uuid.uuid4().hex[:6]}")
    with pytest.raises(Forbidden):
        send(session, stranger)
    with pytest.raises(Forbidden):
        turns_cancel(session_id=session.pk, user=stranger, flt=CancelFilter())


def test_authorisers():
    request = CancelRequest(
        session_id="s",
        requester_id=2,
        client_id="bob",
        is_session_owner=False,
        filter={"all": True},
        matched_turn_ids=["a", "b"],
        turn_owners={"a": "alice", "b": "bob"},
    )
    assert list(turn_owner_only(request)) == ["b"]
    assert list(turn_owner_or_session_owner(request)) == ["b"]
    owner = CancelRequest(**{**request.__dict__, "is_session_owner": True})
    assert list(turn_owner_or_session_owner(owner)) == ["a", "b"]


def test_sends_beyond_the_rate_limit_are_refused(session, alice, settings):
    import time

    from sessions_app.errors import RateLimited
    from sessions_app.infra import live_state

    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "SENDS_PER_MINUTE": 2}
    window = int(time.time() // 60)
    # rolled-back tests reuse user ids: start from a clean counter
    live_state.sync_redis().delete(*(live_state.Keys.rate(alice.pk, w) for w in (window, window + 1)))
    send_rate.forget()
    send(session, alice)
    send(session, alice)
    with pytest.raises(RateLimited):
        send(session, alice)


def test_a_set_counts_each_send_against_its_own_users_rate(session, alice, bob, settings):
    import time

    from sessions_app.errors import RateLimited
    from sessions_app.infra import live_state

    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "SENDS_PER_MINUTE": 2}
    window = int(time.time() // 60)
    live_state.sync_redis().delete(*(live_state.Keys.rate(u.pk, w) for u in (alice, bob) for w in (window, window + 1)))
    send_rate.forget()
    other = session_create(owner=alice, title="other")

    outcomes: list[Any] = turns_send(
        [
            _request(session, alice, "a1"),
            _request(other, alice, "a2"),
            _request(session, bob, "b1"),
            _request(other, alice, "a3"),
        ]
    )

    assert [type(o).__name__ for o in outcomes] == ["SendResult", "SendResult", "SendResult", "RateLimited"]
    assert isinstance(outcomes[3], RateLimited) and outcomes[3].code == "rate_limited"
    assert not MessageNode.objects.filter(session=other, parts__0__text="a3").exists()  # nothing of it stayed


@pytest.fixture
def one_minute(monkeypatch, alice):
    """A fixed minute, its count of alice's sends in Redis empty, nothing reserved here."""
    from sessions_app.infra import live_state

    now = 60.0 * 30_000_000
    monkeypatch.setattr(send_rate.time, "time", lambda: now)
    key = live_state.Keys.rate(alice.pk, int(now // 60))
    live_state.sync_redis().delete(key)
    send_rate.forget()
    yield key
    send_rate.forget()


def test_the_send_limit_holds_across_processes(session, alice, settings, one_minute):
    from sessions_app.errors import RateLimited
    from sessions_app.infra import live_state

    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "SENDS_PER_MINUTE": 40}  # blocks of 2
    live_state.sync_redis().incrby(one_minute, 37)  # what other processes reserved of alice's minute

    accepted = 0
    with pytest.raises(RateLimited):
        for _ in range(10):
            send(session_create(owner=alice, title="r"), alice)
            accepted += 1

    assert accepted == 3  # 37 + 3: the limit, not a block more


def test_sends_through_one_process_reserve_the_limit_in_blocks(session, alice, settings, one_minute, monkeypatch):
    from sessions_app.infra import live_state

    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "SENDS_PER_MINUTE": 600}  # blocks of 30
    reservations = 0
    reserve = send_rate._reserve

    def counted(*args, **kwargs):
        nonlocal reservations
        reservations += 1
        return reserve(*args, **kwargs)

    monkeypatch.setattr(send_rate, "_reserve", counted)

    for _ in range(31):
        send(session_create(owner=alice, title="r"), alice)

    assert reservations == 2  # one Redis round trip per 30 sends, not one per send
    assert live_state.sync_redis().get(one_minute) == b"60"


def test_signals_announce_messages_and_turns_after_commit(session, alice, django_capture_on_commit_callbacks):
    from sessions_app import signals

    heard: list[tuple[str, object]] = []

    def on_message(sender, node, **kwargs):
        heard.append(("message", node.role))

    def on_start(sender, turn, **kwargs):
        heard.append(("started", turn.turn_id))

    def on_end(sender, turn, reason, **kwargs):
        heard.append(("ended", reason))

    signals.message_created.connect(on_message)
    signals.turn_started.connect(on_start)
    signals.turn_ended.connect(on_end)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = send(session, alice)
            assert heard == []  # nothing before the commit
        with django_capture_on_commit_callbacks(execute=True):
            turn_claim(turn_pk=result.turn.pk, worker_id="w")
            turn_finish(ended(result, "complete"))
    finally:
        signals.message_created.disconnect(on_message)
        signals.turn_started.disconnect(on_start)
        signals.turn_ended.disconnect(on_end)
    assert ("message", "user") in heard and ("message", "assistant") in heard
    assert ("started", result.turn.turn_id) in heard and ("ended", "complete") in heard


def test_sends_grouped_in_one_transaction_fail_alone(session, alice):
    """A grouped send refused by its policy reports its own error; the others commit."""
    busy_session = session_create(owner=alice, title="busy", policy="reject")
    send(busy_session, alice)  # streaming: the next reject-policy send is refused

    def request(chat):
        body = SendBody.model_validate(
            {"messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
        )
        return SendRequest(chat.pk, alice, body)

    outcomes = turns_send([request(session), request(busy_session), request(session)])
    assert isinstance(outcomes[1], Busy)
    for outcome in (outcomes[0], outcomes[2]):
        assert not isinstance(outcome, Exception)
        assert Turn.objects.get(pk=outcome.turn.pk).status == TurnStatus.ACTIVE
    assert Turn.objects.filter(session=busy_session).count() == 1  # nothing of the refused send stayed


def _request(chat, user, *texts, **extra):
    body = SendBody.model_validate(
        {
            "messages": [
                {"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": t}]} for t in texts
            ],
            **extra,
        }
    )
    return SendRequest(chat.pk, user, body)


def test_a_set_of_sends_is_decided_as_if_they_came_one_by_one(alice, monkeypatch, django_capture_on_commit_callbacks):
    """Sends to one session in one set see each other (queue, reject); a multi-message
    send chains its messages; the events go out before the turns are dispatched, once."""
    queueing = session_create(owner=alice, title="q", policy="queue")
    rejecting = session_create(owner=alice, title="r", policy="reject")
    plain = session_create(owner=alice, title="p")
    order: list[tuple[str, object]] = []
    monkeypatch.setattr(announce, "run", lambda pks: order.extend([("dispatch", list(pks))] if pks else []))
    monkeypatch.setattr(emit, "many_now", lambda batches: order.append(("publish", [len(b) for _, b in batches])))
    monkeypatch.setattr(
        emit,
        "ahead_of_workers",
        lambda batches, signals, then: order.append(("publish at commit", [len(b) for _, b in batches])),
    )
    requests = [
        _request(queueing, alice, "q1"),
        _request(rejecting, alice, "r1"),
        _request(queueing, alice, "q2"),
        _request(rejecting, alice, "r2"),
        _request(plain, alice, "p1", "p2"),
        _request(queueing, alice, "q3"),
    ]
    with django_capture_on_commit_callbacks(execute=True):
        outcomes: list[Any] = turns_send(requests)

    q1, r1, q2, r2, p, q3 = outcomes
    assert isinstance(r2, Busy)
    assert [o.turn.status for o in (q1, r1, q2, p, q3)] == ["active", "active", "queued", "active", "queued"]
    # Queued behind the answer it waits for, each after the one before.
    assert q2.turn.user_message.parent_id == q1.turn.assistant_message_id
    assert q3.turn.user_message.parent_id == q2.turn.assistant_message_id
    first, second = MessageNode.objects.filter(session=plain, role="user").order_by("id")
    assert (first.parent_id, second.parent_id, p.turn.user_message_id) == (None, first.pk, second.pk)
    assert p.turn.assistant_message.parent_id == second.pk
    # A wave that starts turns publishes once after its commit, then dispatches them; a wave
    # that queues publishes as it commits (decision 043: set up inside the transaction).
    assert order == [
        ("publish at commit", [3]),
        ("publish at commit", [3]),
        ("publish", [3, 3, 4]),
        ("dispatch", [q1.turn.pk, r1.turn.pk, p.turn.pk]),
    ]
    assert Turn.objects.filter(session=rejecting).count() == 1


def test_a_repeat_by_another_member_or_of_part_of_a_send_conflicts(session, alice, bob):
    first = send_many(session, alice, ["one", "two"])
    with pytest.raises(Conflict, match="another member"):
        send_many(session, bob, ["one", "two"], ids=first.message_ids)
    with pytest.raises(Conflict, match="only some"):
        send_many(session, alice, ["one"], ids=first.message_ids[:1])
    assert send_many(session, alice, ["one", "two"], ids=first.message_ids).turn.pk == first.turn.pk


def test_a_repeated_send_in_a_set_answers_with_its_turn_and_the_others_commit(session, alice):
    original = _request(session, alice, "once", turnId="mine")
    created: Any
    again: Any
    fresh: Any
    [created] = turns_send([original])
    other = session_create(owner=alice, title="other")

    again, fresh = turns_send([original, _request(other, alice, "new")])

    assert again.turn.pk == created.turn.pk and again.created is False
    assert fresh.created and Turn.objects.filter(session=other).count() == 1
    assert Turn.objects.filter(session=session).count() == 1


def test_a_cancel_held_for_a_turn_id_ends_that_turn_when_its_send_arrives_in_a_set(session, alice):
    held = turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter.model_validate({"turnId": "later"}))
    assert held.pending == ["later"]
    other = session_create(owner=alice, title="other")

    cancelled: Any
    running: Any
    cancelled, running = turns_send([_request(session, alice, "hi", turnId="later"), _request(other, alice, "hi")])

    assert cancelled.turn.status == "cancelled" and running.turn.status == "active"
    assert MessageNode.objects.get(pk=cancelled.turn.assistant_message_id).status == NodeStatus.CANCELLED


def _cancel(chat, user, **flt):
    return CancelCommand(chat.pk, user, CancelFilter.model_validate(flt))


def test_a_set_of_cancels_is_decided_as_if_they_came_one_by_one(
    session, alice, bob, monkeypatch, django_capture_on_commit_callbacks
):
    """Cancels in one set: each its own outcome (an error of its own for a stranger), two
    of one session see each other, and at the commit the devices' events and the workers'
    signals for every active turn go out in one pipeline, the events first (decision 043;
    the order on the wire: tests/unit/test_events_ahead_of_signals.py)."""
    other = session_create(owner=alice, title="other")
    mine, bobs, elsewhere = send(session, alice), send(session, bob), send(other, alice)
    for result in (mine, bobs, elsewhere):
        turn_claim(turn_pk=result.turn.pk, worker_id="w")  # streaming: a worker must stop them
    stranger = get_user_model().objects.create_user(username=f"eve-{uuid.uuid4().hex[:6]}", password="x")
    order: list[tuple[str, object, object]] = []

    def publish_then_signal(batches: Any, signals: Any) -> Any:
        order.append(("publish, then signal", [len(b) for _, b in batches], sorted(p for _, ps in signals for p in ps)))

        def read_replies() -> list[list[str]]:
            order.append(("replies read", [], []))
            return [[] for _ in batches]

        return read_replies

    monkeypatch.setattr(live_state, "publish_then_signal", publish_then_signal)
    monkeypatch.setattr(emit.archiver, "add", lambda *args: None)

    with django_capture_on_commit_callbacks(execute=True):
        outcomes: list[Any] = turns_cancel_many(
            [
                _cancel(session, alice, turnId=mine.turn.turn_id),
                _cancel(session, stranger),
                _cancel(other, alice, all=True),
                _cancel(session, bob, all=True),  # after alice's: hers is no longer there to match
            ]
        )

    first, refused, everything_else, bobs_all = outcomes
    assert first.cancelled == [mine.turn.turn_id]
    assert isinstance(refused, NotFound | Forbidden)
    assert everything_else.cancelled == [elsewhere.turn.turn_id]
    assert bobs_all.cancelled == [bobs.turn.turn_id] and bobs_all.rejected == []
    assert sorted(Turn.objects.filter(cancel_requested_by__gt="").values_list("pk", flat=True)) == sorted(
        [mine.turn.pk, bobs.turn.pk, elsewhere.turn.pk]
    )
    assert order == [
        ("publish, then signal", [1, 1, 1], sorted([mine.turn.pk, elsewhere.turn.pk, bobs.turn.pk])),
        ("replies read", [], []),
    ]


def test_a_cancel_of_a_set_that_fails_alone_leaves_the_others_to_commit(session, alice, monkeypatch):
    """An authoriser that raises for one cancel: the set runs again one by one, that cancel
    gets its error, the others cancel their turns."""
    other = session_create(owner=alice, title="other")
    kept, stopped = send(session, alice), send(other, alice)

    def fussy(request: CancelRequest) -> list[str]:
        if request.session_id == str(session.pk):
            raise RuntimeError("the authoriser broke")
        return request.matched_turn_ids

    monkeypatch.setattr("sessions_app.cancellation.services.import_string", lambda _path: fussy)
    broken, fine = turns_cancel_many([_cancel(session, alice, all=True), _cancel(other, alice, all=True)])

    assert isinstance(broken, RuntimeError)
    assert not isinstance(fine, Exception) and fine.cancelled == [stopped.turn.turn_id]
    assert Turn.objects.get(pk=kept.turn.pk).status == TurnStatus.ACTIVE
    assert Turn.objects.get(pk=stopped.turn.pk).status == TurnStatus.CANCELLED  # no worker had it: ended at once


def test_grouped_claims_and_finishes(session, alice):
    first, second = send(session, alice), send(session, alice)
    claimed = turns_claim(turn_pks=[first.turn.pk, second.turn.pk, first.turn.pk], worker_id="w")
    assert [c.turn_id if c else None for c in claimed] == [first.turn.turn_id, second.turn.turn_id, None]
    assert claimed[0] is not None and claimed[0].context == [
        {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
    ]
    no_such_turn = TurnOutcome(
        turn_pk=0, session_id=str(session.pk), message_id="", status="complete", parts=[], content_seq=0
    )
    finished = turns_finish(
        [
            ended(first, "complete", [{"type": "text", "text": "a"}], content_seq=3),
            no_such_turn,  # ends nothing, alone
            ended(second, "cancelled", content_seq=4),
        ]
    )
    assert finished == [True, False, True]
    assert Turn.objects.get(pk=first.turn.pk).status == "complete"
    assert Turn.objects.get(pk=second.turn.pk).status == "cancelled"
    assert MessageNode.objects.get(pk=first.turn.assistant_message.pk).text == "a"


def test_a_promoted_turn_is_announced_before_its_worker_is_asked_to_run_it(
    session, alice, monkeypatch, django_capture_on_commit_callbacks
):
    """Its `turn.start` must be published first: no delta of it may come before."""
    order: list[tuple[str, object]] = []
    monkeypatch.setattr(announce, "run", lambda pks: order.append(("dispatch", pks)))
    monkeypatch.setattr(emit, "now", lambda _sid, batch: order.append(("publish", [e["type"] for e in batch])))
    active, queued = send(session, alice), send(session, alice, policy="queue")
    turn_claim(turn_pk=active.turn.pk, worker_id="w")
    with django_capture_on_commit_callbacks(execute=True):
        assert turn_finish(ended(active, "complete"))
    assert order == [("publish", ["turn.end", "turn.start"]), ("dispatch", [queued.turn.pk])]


def test_archiving_a_message_moves_its_session_up_the_lists(session, alice):
    other = session_create(owner=alice, title="other")
    before = {s.pk: s.updated_at for s in (session, other)}
    archive_many(
        {
            str(session.pk): [(1, "message", '{"seq":1,"type":"message","message":{}}')],
            str(other.pk): [(1, "presence", '{"seq":1,"type":"presence","online":[]}')],
        }
    )
    session.refresh_from_db()
    other.refresh_from_db()
    assert session.updated_at > before[session.pk]
    assert other.updated_at == before[other.pk]  # presence is not news


def test_deleting_a_session_stops_its_turns_then_tells_devices_web_processes_workers_in_order(
    session, alice, bob, monkeypatch, django_capture_on_commit_callbacks
):
    from sessions_app.sessions import services

    claimed = send(session, alice, "streaming")
    assert turn_claim(turn_pk=claimed.turn.pk, worker_id="w1") is not None
    unclaimed = send(session, bob, "not picked up yet")
    queued = send(session, alice, "waiting", policy="queue")
    answers = sorted(r.turn.assistant_message.node_id for r in (claimed, unclaimed, queued))
    sid = str(session.pk)
    done: list[tuple[Any, ...]] = []
    monkeypatch.setattr(emit, "now", lambda s, events: done.append(("events", s, [e["type"] for e in events])))
    monkeypatch.setattr(services, "_announce_session_deleted", lambda s: done.append(("close sockets", s)))
    monkeypatch.setattr(services, "_membership_ended", lambda *a: done.append(("member left", *a)))
    monkeypatch.setattr(
        live_state,
        "signal_cancels_sync",
        lambda signals, deleted=False: done.extend(("stop", s, pks) for s, pks in signals if deleted),
    )
    monkeypatch.setattr(live_state, "forget_session_sync", lambda s, ids: done.append(("forget", s, sorted(ids))))

    with pytest.raises(Forbidden):
        services.session_delete(session=session, by=bob)
    assert Turn.objects.filter(session=session).count() == 3 and done == []
    with django_capture_on_commit_callbacks(execute=True):
        services.session_delete(session=session, by=alice)

    # Only the claimed turn has a worker to stop; the members' sockets are not closed one
    # by one (4403) ahead of the event, but all of them after it.
    assert done == [
        ("events", sid, ["session.deleted"]),
        ("close sockets", sid),
        ("stop", sid, [claimed.turn.pk]),
        ("forget", sid, answers),
    ]
    assert not Turn.objects.filter(turn_id__in=[r.turn.turn_id for r in (claimed, unclaimed, queued)]).exists()
    assert not MessageNode.objects.filter(node_id__in=answers).exists()
    with pytest.raises(NotFound):  # a repeat: gone already
        services.session_delete(session=session, by=alice)


def test_a_users_account_deleted_takes_the_sessions_they_own_as_their_deletion_would(
    session, alice, bob, monkeypatch, django_capture_on_commit_callbacks
):
    """Not through the service: the cascade of the account's deletion (the admin's user
    page, a shell). Their own session stops and goes for everyone, as its deletion by them
    would; in someone else's session they only leave."""
    from sessions_app.sessions import services

    claimed = send(session, alice, "streaming")
    assert turn_claim(turn_pk=claimed.turn.pk, worker_id="w1") is not None
    answers = [claimed.turn.assistant_message.node_id]
    others = session_create(owner=bob, title="bob's")
    member_add(session=others, by=bob, username=alice.get_username())
    sid, other_sid = str(session.pk), str(others.pk)
    done: list[tuple[Any, ...]] = []
    monkeypatch.setattr(emit, "now", lambda s, events: done.append(("events", s, [e.get("clientId") for e in events])))
    monkeypatch.setattr(services, "_announce_session_deleted", lambda s: done.append(("close sockets", s)))
    monkeypatch.setattr(services, "_announce_membership_ended", lambda s, user: done.append(("close theirs", s, user)))
    monkeypatch.setattr(
        live_state,
        "signal_cancels_sync",
        lambda signals, deleted=False: done.extend(("stop", s, pks) for s, pks in signals if deleted),
    )
    monkeypatch.setattr(live_state, "forget_session_sync", lambda s, ids: done.append(("forget", s, sorted(ids))))

    with django_capture_on_commit_callbacks(execute=True):
        get_user_model().objects.get(pk=alice.pk).delete()

    assert done == [
        ("events", sid, [alice.get_username()]),  # session.deleted, by its owner
        ("close sockets", sid),
        ("stop", sid, [claimed.turn.pk]),
        ("forget", sid, answers),
        ("events", other_sid, [alice.get_username()]),  # member.left
        ("close theirs", other_sid, str(alice.pk)),
    ]
    assert not ChatSession.objects.filter(pk=sid).exists() and ChatSession.objects.filter(pk=other_sid).exists()


# --- changes made from a copy read before another change -----------------------------------


def test_a_change_from_a_copy_read_before_a_deletion_does_not_bring_the_session_back(session, alice, bob, monkeypatch):
    """A member's rename, an invitation and the agents' changes read the session, then write
    it: one that lost the race with the owner's deletion is `not_found`, and the session
    stays gone (a plain `save` of the copy inserted it again, with no member)."""
    from sessions_app.agents.services import session_agent_remove
    from sessions_app.sessions import services

    monkeypatch.setattr(live_state, "forget_session_sync", lambda s, ids: None)
    carol = get_user_model().objects.create_user(username=f"carol-{uuid.uuid4().hex[:6]}", password="x")
    copy = ChatSession.objects.get(pk=session.pk)  # as a request read it before the deletion
    services.session_delete(session=session, by=alice)
    with pytest.raises(NotFound):
        services.session_update(session=copy, user=bob, title="renamed")
    with pytest.raises(NotFound):
        services.session_update(session=copy, user=alice, policy="queue")
    with pytest.raises(NotFound):
        member_add(session=copy, by=alice, username=carol.username)
    monkeypatch.setattr("sessions_app.agents.services.require_member", lambda **kw: copy)
    with pytest.raises(NotFound):
        session_agent_remove(session_id=copy.pk, by=alice, name="critic")
    assert not ChatSession.objects.filter(pk=session.pk).exists()
    assert not Membership.objects.filter(session_id=session.pk).exists()


def test_two_changes_made_at_once_both_stay(session, alice, bob, django_capture_on_commit_callbacks):
    """The owner's new options and a member's rename, each from a copy read before the
    other's change: neither undoes the other, and a change that changes nothing tells no one."""
    from sessions_app.sessions import services

    owners_copy, members_copy = (ChatSession.objects.get(pk=session.pk) for _ in range(2))
    services.session_update(session=members_copy, user=bob, title="renamed")
    services.session_update(session=owners_copy, user=alice, model_options={"tokens": 9}, policy="queue")
    stored = ChatSession.objects.get(pk=session.pk)
    assert (stored.title, stored.model_options, stored.policy) == ("renamed", {"tokens": 9}, "queue")
    with django_capture_on_commit_callbacks() as told:
        unchanged = services.session_update(session=members_copy, user=bob, title="renamed")
    assert told == [] and unchanged.updated_at == stored.updated_at


def test_a_cancel_that_ends_a_turn_no_worker_picked_up_starts_the_turn_queued_behind_it(session, alice):
    # No worker has claimed the first turn yet (all busy): the cancel ends it here, and the
    # turn waiting for it starts in the same step instead of waiting for another turn's end.
    first, waiting = send(session, alice), send(session, alice, policy="queue")
    outcome = turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(turn_id=first.turn.turn_id))
    assert outcome.cancelled == [first.turn.turn_id]
    assert Turn.objects.get(pk=waiting.turn.pk).status == TurnStatus.ACTIVE
    assert MessageNode.objects.get(pk=waiting.turn.assistant_message.pk).status == NodeStatus.STREAMING
    assert [(e["type"], e.get("turnId")) for e in outcome.events] == [
        ("cancel", None),
        ("turn.end", first.turn.turn_id),
        ("turn.start", waiting.turn.turn_id),
    ]
    assert [t.pk for t in outcome.started] == [waiting.turn.pk]


def test_a_place_under_the_cap_freed_by_a_set_of_cancels_is_taken(session, alice, bob, settings):
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_ACTIVE_TURNS": 1}
    first, over_the_cap = send(session, alice), send(session, bob)
    assert over_the_cap.turn.status == TurnStatus.QUEUED
    outcomes = turns_cancel_many(
        [
            CancelCommand(session_id=session.pk, user=alice, flt=CancelFilter(own=True)),
            CancelCommand(session_id=session.pk, user=alice, flt=CancelFilter(own=True)),  # a no-op after it
        ]
    )
    assert [o.cancelled if isinstance(o, CancelOutcome) else o for o in outcomes] == [[first.turn.turn_id], []]
    assert Turn.objects.get(pk=over_the_cap.turn.pk).status == TurnStatus.ACTIVE


def test_a_cancel_that_ends_nothing_here_starts_nothing(session, alice):
    first, waiting = send(session, alice), send(session, alice, policy="queue")
    turn_claim(turn_pk=first.turn.pk, worker_id="w")  # its worker stops it, then the queue moves
    outcome = turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(turn_id=first.turn.turn_id))
    assert outcome.started == [] and [e["type"] for e in outcome.events] == ["cancel"]
    assert Turn.objects.get(pk=waiting.turn.pk).status == TurnStatus.QUEUED


@pytest.mark.parametrize("status", [TurnStatus.COMPLETE, TurnStatus.ERROR])
def test_a_cancel_committed_before_the_answer_ended_by_itself_wins(session, alice, status):
    # The cancel's answer and its `cancel` event name the turn in `cancelled`; the worker,
    # which had not heard the cancel yet, reports the answer's own end: the turn ends
    # cancelled all the same, with everything it streamed.
    result = send(session, alice)
    turn_claim(turn_pk=result.turn.pk, worker_id="w")
    assert turns_cancel(session_id=session.pk, user=alice, flt=CancelFilter(own=True)).cancelled == [
        result.turn.turn_id
    ]
    answer = [{"type": "text", "text": "the whole answer"}]
    assert turn_finish(ended(result, status, answer, content_seq=9))
    turn = Turn.objects.get(pk=result.turn.pk)
    assert (turn.status, turn.cancel_requested_by, turn.error_code) == (TurnStatus.CANCELLED, alice.username, "")
    node = MessageNode.objects.get(pk=result.turn.assistant_message.pk)
    assert (node.status, node.parts) == (NodeStatus.CANCELLED, answer)
