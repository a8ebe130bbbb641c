"""The hand-written reads of the hot paths answer exactly what the ORM queries they
replace answer (on the database the suite runs on: SQLite locally, PostgreSQL in CI)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from sessions_app.events.archive import archive_many
from sessions_app.infra.sql import insert_new, instances, select_list, table, unique_row, values
from sessions_app.models import (
    IN_FLIGHT,
    ChatSession,
    EventRecord,
    Membership,
    MessageNode,
    NodeStatus,
    Turn,
    TurnStatus,
)
from sessions_app.schemas import SendBody
from sessions_app.sessions import _queries as sessions_queries
from sessions_app.sessions import selectors
from sessions_app.sessions._queries import sessions_of_members
from sessions_app.sessions.services import member_add, session_create
from sessions_app.turns import _queries as turn_queries
from sessions_app.turns.sending import turn_send

pytestmark = pytest.mark.django_db


def user(name: str):
    return get_user_model().objects.create_user(username=f"{name}-{uuid.uuid4().hex[:6]}", password="x")


@pytest.fixture
def world():
    """Three sessions: members, turns in every state, nodes settled and not."""
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    chats = [session_create(owner=alice, title=str(i)) for i in range(3)]
    member_add(session=chats[0], by=alice, username=bob.username)
    for chat in chats[:2]:
        root = MessageNode.objects.create(session=chat, node_id=f"u-{chat.pk}", role="user", client_id="alice")
        answer = MessageNode.objects.create(
            session=chat, node_id=f"a-{chat.pk}", parent=root, role="assistant", parts=[{"type": "text", "text": "x"}]
        )
        MessageNode.objects.create(session=chat, node_id=f"q-{chat.pk}", parent=answer, status=NodeStatus.QUEUED)
        MessageNode.objects.create(session=chat, node_id=f"s-{chat.pk}", parent=answer, status=NodeStatus.STREAMING)
        for status, owner, cancelled in (
            (TurnStatus.ACTIVE, "alice", ""),
            (TurnStatus.ACTIVE, "bob", "alice"),
            (TurnStatus.QUEUED, "alice", ""),
            (TurnStatus.COMPLETE, "alice", ""),
        ):
            Turn.objects.create(
                session=chat,
                turn_id=str(uuid.uuid4()),
                user=alice if owner == "alice" else bob,
                client_id=owner,
                status=status,
                cancel_requested_by=cancelled,
            )
    Turn.objects.filter(session=chats[1], status=TurnStatus.ACTIVE).update(worker_id="w")
    return {"users": (alice, bob, carol), "chats": chats}


def pks(rows) -> list:
    return [row.pk for row in rows]


def test_sessions_of_members(world):
    alice, bob, carol = world["users"]
    chats = world["chats"]
    found = sessions_of_members([c.pk for c in chats], [alice.pk, bob.pk, carol.pk])
    expected = Membership.objects.filter(session__in=chats, user__in=[alice, bob, carol])
    pairs = sorted((s.pk, s.member_id) for s in found)  # type: ignore[attr-defined]
    assert pairs == sorted((m.session_id, m.user_id) for m in expected)
    assert {s.pk: s.policy for s in found} == {c.pk: c.policy for c in chats}
    assert sessions_of_members([chats[1].pk], [bob.pk]) == []


def test_active_turn_ids(world):
    for chat in world["chats"]:
        expected = Turn.objects.filter(session=chat, status=TurnStatus.ACTIVE).order_by("id")
        found = sessions_queries.active_turn_ids(str(chat.pk))
        assert found == list(expected.values_list("client_id", "turn_id"))
    assert [len(sessions_queries.active_turn_ids(str(chat.pk))) for chat in world["chats"]] == [2, 2, 0]


def test_in_flight_turns(world):
    ids = [c.pk for c in world["chats"]]
    expected = Turn.objects.filter(session_id__in=ids, status__in=IN_FLIGHT).order_by("id")
    assert pks(turn_queries.in_flight_turns(ids)) == pks(expected)
    assert [t.session_id for t in turn_queries.in_flight_turns(ids[:1])] == [ids[0]] * 3


@pytest.mark.parametrize("count", [1, 3])
def test_newest_settled_nodes(world, count):
    chats = world["chats"][:count]
    settled = MessageNode.objects.exclude(status__in=[NodeStatus.QUEUED, NodeStatus.STREAMING]).order_by("-id")
    expected = {c.pk: settled.filter(session=c).first() for c in chats}
    found = turn_queries.newest_settled_nodes([c.pk for c in chats])
    assert {k: n.node_id for k, n in found.items()} == {k: n.node_id for k, n in expected.items() if n}


def test_the_parent_of_a_send_beside_turns_in_flight(world):
    """The newest first message of the turns in flight, and its parent: a root's parent
    is None, and turns that sent no message (regenerations) name none."""
    chat = world["chats"][2]
    alice = world["users"][0]
    turns = [
        Turn.objects.create(session=chat, turn_id=str(uuid.uuid4()), user=alice, client_id="alice") for _ in range(3)
    ]
    assert turn_queries.parent_of_newest_first_message([t.pk for t in turns]) == (False, None)
    root = MessageNode.objects.create(session=chat, node_id="root", role="user", turn=turns[0])
    MessageNode.objects.create(session=chat, node_id="root-2", parent=root, role="user", turn=turns[0])
    assert turn_queries.parent_of_newest_first_message([t.pk for t in turns]) == (True, None)
    answer = MessageNode.objects.create(session=chat, node_id="answer", parent=root, role="assistant", turn=turns[0])
    first = MessageNode.objects.create(session=chat, node_id="first", parent=answer, role="user", turn=turns[1])
    MessageNode.objects.create(session=chat, node_id="second", parent=first, role="user", turn=turns[1])
    found, parent = turn_queries.parent_of_newest_first_message([t.pk for t in turns])
    assert found and parent is not None
    assert (parent.pk, parent.node_id) == (answer.pk, "answer")
    assert parent.get_deferred_fields() >= {"parts", "role", "parent_id"}  # only what a parent needs
    # Only the turns asked about count.
    assert turn_queries.parent_of_newest_first_message([turns[0].pk, turns[2].pk]) == (True, None)
    # A queued message's parent: the answer of the newest turn that sent a message.
    reply = MessageNode.objects.create(session=chat, node_id="reply", parent=first, role="assistant", turn=turns[1])
    Turn.objects.filter(pk=turns[1].pk).update(assistant_message=reply)
    found, parent = turn_queries.parent_of_newest_first_message([t.pk for t in turns], answer=True)
    assert found and parent is not None
    assert (parent.pk, parent.node_id) == (reply.pk, "reply")
    assert turn_queries.parent_of_newest_first_message([turns[0].pk], answer=True) == (True, None)  # none linked
    assert turn_queries.parent_of_newest_first_message([turns[2].pk], answer=True) == (False, None)


def test_a_parent_by_its_key(world):
    node = MessageNode.objects.filter(session=world["chats"][0]).first()
    assert node is not None
    found = turn_queries.parent_node(node.pk)
    assert found is not None and (found.pk, found.node_id) == (node.pk, node.node_id)
    assert turn_queries.parent_node(None) is None
    assert turn_queries.parent_node(10**9) is None


def test_claim_turns(world):
    turns = list(Turn.objects.order_by("id"))
    expected = pks(Turn.objects.filter(pk__in=pks(turns), status=TurnStatus.ACTIVE, worker_id="").order_by("id"))
    Turn.objects.filter(pk=expected[0]).update(model_options={"tokens": 3, "nested": {"a": [1, None]}})
    claimed = turn_queries.claim_turns(pks(turns), "me")
    assert pks(claimed) == expected
    assert pks(Turn.objects.filter(worker_id="me").order_by("id")) == expected
    # Each row holds what the ORM reads for that turn, typed as the ORM types it.
    for row in claimed:
        turn = Turn.objects.get(pk=row.pk)
        assert row == turn_queries.ClaimRow(
            turn.pk,
            turn.session_id,
            turn.turn_id,
            turn.client_id,
            turn.model,
            turn.model_options,
            turn.cancel_requested_by,
            turn.user_message_id,
            turn.assistant_message_id,
        )
        assert isinstance(row.session_id, uuid.UUID)
    assert claimed[0].model_options == {"tokens": 3, "nested": {"a": [1, None]}}
    assert turn_queries.claim_turns(pks(turns), "other") == []  # taken: nobody claims them twice


def test_context_rows_are_the_branch_its_siblings_and_their_exchanges_and_nothing_else(world):
    chat = world["chats"][0]
    root, answer = MessageNode.objects.get(node_id=f"u-{chat.pk}"), MessageNode.objects.get(node_id=f"a-{chat.pk}")
    # Under the answer: the asking message, a sibling with its answer and a message beyond
    # that answer (not context material), and an edit of the root beside it.
    asking = MessageNode.objects.create(session=chat, node_id="asking", parent=answer, role="user")
    beside = MessageNode.objects.create(session=chat, node_id="beside", parent=answer, role="user")
    reply = MessageNode.objects.create(session=chat, node_id="reply", parent=beside, role="assistant", parts=[])
    MessageNode.objects.create(session=chat, node_id="beyond", parent=reply, role="user")
    edit = MessageNode.objects.create(session=chat, node_id="edit", role="user", fork_of=root)
    elsewhere = world["chats"][1]

    found = turn_queries.context_rows([asking.pk], [chat.pk, elsewhere.pk])

    expected = {"asking", "beside", "reply", f"u-{chat.pk}", f"a-{chat.pk}", "edit", f"q-{chat.pk}", f"s-{chat.pk}"}
    # the other session's first exchange: the roots of every session read are context material
    assert {n.node_id for n in found} == expected | {f"u-{elsewhere.pk}", f"a-{elsewhere.pk}"}
    for row in found:  # the fields a context needs, as the ORM reads them
        node = MessageNode.objects.get(pk=row.pk)
        assert row == turn_queries.ContextRow(
            node.pk, node.node_id, node.parent_id, node.role, node.parts, node.fork_of_id, node.turn_id, row.session_id
        )
        assert [row.session_id] == values(MessageNode, "session", [node.session_id])  # as stored
    assert next(r for r in found if r.pk == edit.pk).fork_of_id == root.pk
    assert turn_queries.context_rows([], [chat.pk]) == []


@pytest.mark.parametrize(
    "only_active, client_id, turn_id, count",
    [
        (False, None, None, 2),
        (True, None, None, 1),
        (False, "alice", None, 2),
        (True, "bob", None, 0),  # bob's turn already has a cancel asked for
        (False, None, "pick", 1),
    ],
)
def test_cancellable_turns(world, only_active, client_id, turn_id, count):
    chat = world["chats"][0]
    if turn_id == "pick":
        turn_id = Turn.objects.filter(session=chat, status=TurnStatus.QUEUED).get().turn_id
    expected = Turn.objects.filter(session=chat, status__in=IN_FLIGHT, cancel_requested_by="")
    if only_active:
        expected = expected.filter(status=TurnStatus.ACTIVE)
    if client_id:
        expected = expected.filter(client_id=client_id)
    if turn_id:
        expected = expected.filter(Q(turn_id=turn_id))
    found = turn_queries.cancellable_turns(chat.pk, only_active=only_active, client_id=client_id, turn_id=turn_id)
    assert pks(found) == pks(expected.order_by("id"))
    assert len(found) == count


def test_instances_are_what_the_orm_loads(world):
    """Every field typed as the ORM types it: UUIDs, datetimes, JSON, foreign keys."""
    Turn.objects.update(model_options={"tokens": 3, "nested": {"a": [1, None]}})
    for model in (Turn, MessageNode, ChatSession):
        found = instances(model, f"SELECT {select_list(model)} FROM {table(model)}", [])
        expected = {obj.pk: obj for obj in model.objects.all()}
        assert len(found) == len(expected) > 0
        for obj in found:
            assert _row(obj, exclude=()) == _row(expected[obj.pk], exclude=())
            assert obj._state.adding is False  # saved later as an update, as the ORM's would be


def test_instances_of_some_fields_defer_the_rest(world):
    loaded = ("id", "node_id", "session")
    sql = f"SELECT {select_list(MessageNode, fields=loaded)} FROM {table(MessageNode)}"
    found = instances(MessageNode, sql, [], fields=loaded)
    assert {n.node_id for n in found} == set(MessageNode.objects.values_list("node_id", flat=True))
    assert all(n.get_deferred_fields() >= {"parts", "status"} for n in found)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the plan asserted is SQLite's")
def test_in_flight_reads_look_up_the_few_turns_in_flight_not_every_turn_of_the_session(world):
    """A long session's sends and cancels stay as quick as a new one's: the reads of the
    turns in flight go through the (session, status) index."""
    chat = world["chats"][0]
    with CaptureQueriesContext(connection) as queries:
        turn_queries.in_flight_turns([chat.pk])
        turn_queries.cancellable_turns(chat.pk, only_active=False, client_id=None, turn_id=None)
    assert len(queries.captured_queries) == 2
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
            plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
            assert "turn_session_status" in plan, plan


def test_a_lookup_by_unique_key_reads_its_row_without_ordering(world):
    chat = world["chats"][0]
    turn = Turn.objects.filter(session=chat).last()
    assert turn is not None
    related = Turn.objects.select_related("user_message", "assistant_message", "parent_turn")
    with CaptureQueriesContext(connection) as queries:
        found = unique_row(related.filter(session=chat, turn_id=turn.turn_id))
        missing = unique_row(related.filter(session=chat, turn_id="no-such-turn"))
    assert found == turn and _row(found, exclude=()) == _row(turn, exclude=())
    assert missing is None
    assert all("ORDER BY" not in query["sql"] for query in queries.captured_queries)


def test_a_session_id_that_is_not_a_uuid_is_refused_before_any_sql():
    with pytest.raises(ValidationError):
        turn_queries.in_flight_turns(["not-a-uuid"])


def test_link_turns_to_messages(world):
    """A turn points at its answer and at the answer's parent (what the ORM update did)."""
    alice = world["users"][0]
    chat = world["chats"][2]
    question = MessageNode.objects.create(session=chat, node_id="q", role="user")
    turns = [Turn.objects.create(session=chat, turn_id=f"t{i}", user=alice, client_id="alice") for i in range(2)]
    answers = [
        MessageNode.objects.create(session=chat, node_id=f"a{i}", parent=question, role="assistant", turn=turn)
        for i, turn in enumerate(turns)
    ]
    MessageNode.objects.filter(pk=question.pk).update(turn=turns[0])  # a user message of the turn is no answer
    other = Turn.objects.create(session=chat, turn_id="other", user=alice, client_id="alice")
    turn_queries.link_turns_to_messages([t.pk for t in turns])
    for turn, answer in zip(turns, answers, strict=True):
        turn.refresh_from_db()
        assert (turn.assistant_message_id, turn.user_message_id) == (answer.pk, question.pk)
    other.refresh_from_db()
    assert (other.assistant_message_id, other.user_message_id) == (None, None)


def test_archiving_skips_events_archived_already(world):
    """An event archived twice (a retried batch) stays once; the others are written."""
    chat = world["chats"][2]
    EventRecord.objects.create(session=chat, seq=2, type="message", frame='{"seq":2,"first":true}')
    archive_many({str(chat.pk): [(seq, "message", f'{{"seq":{seq}}}') for seq in (1, 2, 3)]})
    frames = dict(EventRecord.objects.filter(session=chat).values_list("seq", "frame"))
    assert frames == {1: '{"seq":1}', 2: '{"seq":2,"first":true}', 3: '{"seq":3}'}


def _row(obj, exclude=("id", "created_at")) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in type(obj)._meta.concrete_fields if f.name not in exclude}


def test_insert_new_stores_what_bulk_create_stores(world):
    """Every field, defaults, JSON, foreign keys assigned as instances and auto_now_add,
    read back from the database, the same for both; and the instances get their keys."""
    alice = world["users"][0]
    chat = world["chats"][2]

    def turns():
        return [
            Turn(session=chat, turn_id=str(uuid.uuid4()), user=alice, client_id="alice", model_options={"rate": i})
            for i in range(3)
        ]

    ours, theirs = turns(), turns()
    insert_new(ours)
    Turn.objects.bulk_create(theirs)
    assert all(t.pk for t in ours)
    assert len({t.pk for t in ours}) == 3
    for mine, other in zip(ours, theirs, strict=True):
        stored, expected = Turn.objects.get(pk=mine.pk), Turn.objects.get(pk=other.pk)
        assert {**_row(stored), "turn_id": ""} == {**_row(expected), "turn_id": ""}
        assert stored.created_at is not None and stored.created_at == mine.created_at

    parent = MessageNode.objects.create(session=chat, node_id="root", role="user")
    nodes = [
        MessageNode(session=chat, node_id=f"n{i}", parent=parent, role="user", parts=[{"type": "text", "text": t}])
        for i, t in enumerate(("é0", "é1"))
    ]
    insert_new(nodes)
    by_id = {n.node_id: n for n in MessageNode.objects.filter(pk__in=pks(nodes))}
    assert [by_id[f"n{i}"].parts[0]["text"] for i in range(2)] == ["é0", "é1"]
    assert {n.parent_id for n in by_id.values()} == {parent.pk}
    assert {n.status for n in by_id.values()} == {NodeStatus.COMPLETE}


def test_insert_new_takes_the_key_of_a_relation_saved_after_it_was_assigned(world):
    chat = world["chats"][2]
    parent = MessageNode(session=chat, node_id="p", role="user")
    child = MessageNode(session=chat, node_id="c", parent=parent, role="assistant")
    with pytest.raises(ValueError, match="parent"):
        insert_new([child])
    insert_new([parent])
    insert_new([child])
    assert MessageNode.objects.get(pk=child.pk).parent_id == parent.pk


def test_insert_new_batches_past_the_parameter_limit(world):
    chat = world["chats"][2]
    nodes = [MessageNode(session=chat, node_id=f"m{i}", role="user") for i in range(300)]
    insert_new(nodes)
    stored = dict(MessageNode.objects.filter(pk__in=pks(nodes)).values_list("pk", "node_id"))
    assert [stored[n.pk] for n in nodes] == [f"m{i}" for i in range(300)]


def test_a_session_detail_reads_its_members_and_its_turns_in_flight_once_each(world):
    chat = ChatSession.objects.get(pk=world["chats"][0].pk)  # as require_member gives it: no owner loaded
    with CaptureQueriesContext(connection) as reads:
        detail = selectors.session_payload(chat, detail=True)

    assert len(reads.captured_queries) == 2
    alice, bob, _ = world["users"]
    assert (detail["owner"], detail["members"]) == (alice.username, [alice.username, bob.username])
    assert detail["activeTurns"] == {t["clientId"]: [t["turnId"]] for t in detail["turns"]}
    assert [t["clientId"] for t in detail["turns"]] == ["alice", "bob"] and len(detail["queuedTurns"]) == 1


def _conversation(exchanges: int) -> ChatSession:
    """A session holding every shape of the tree: answered exchanges, an edit, a
    regeneration, a send of two messages and a queued one (the turns in every state)."""
    alice = user("alice")
    chat = session_create(owner=alice, title="snapshot", policy="queue")

    def send(**body) -> Turn:
        return turn_send(session_id=chat.pk, user=alice, body=SendBody.model_validate(body)).turn

    def text(node_id: str) -> dict:
        return {"id": node_id, "role": "user", "parts": [{"type": "text", "text": node_id}]}

    def settle(turn: Turn) -> None:
        Turn.objects.filter(pk=turn.pk).update(status=TurnStatus.COMPLETE)
        MessageNode.objects.filter(turn=turn).update(status=NodeStatus.COMPLETE)

    first = send(messages=[text("first")])
    settle(first)
    for i in range(exchanges):
        settle(send(messages=[text(f"q{i}")]))
    settle(send(messages=[text("edited")], forkOf="first"))
    assert first.assistant_message is not None
    settle(send(regenerate=first.assistant_message.node_id))
    send(messages=[text("two-a"), text("two-b")])
    send(messages=[text("waiting")])  # queued behind the active one
    return chat


def _orm_snapshot_rows(chat: ChatSession) -> tuple[list[MessageNode], list[Turn]]:
    nodes = MessageNode.objects.filter(session=chat).select_related("parent", "fork_of", "turn").order_by("id")
    turns = Turn.objects.filter(session=chat).select_related("user_message", "assistant_message", "parent_turn")
    return list(nodes), list(turns.order_by("id"))


def test_turns_with_their_messages_are_what_the_orm_loads_in_one_statement():
    """What the turns list, a turn's detail and a session's detail show of each turn (its
    messages' ids, its answer's text, its parent's turnId), read without the ORM."""
    chat = _conversation(2)
    answered = Turn.objects.filter(session=chat, user_message__node_id="first").order_by("id").first()
    assert answered is not None
    Turn.objects.create(
        session=chat, turn_id="helper", user=answered.user, client_id="agent:critic", parent_turn=answered
    )
    MessageNode.objects.filter(turn=answered, role="assistant").update(parts=[{"type": "text", "text": "an answer"}])
    orm = Turn.objects.filter(session=chat).select_related("user_message", "assistant_message", "parent_turn")

    def payloads(turns) -> list[dict]:
        return [selectors.turn_payload(turn) for turn in turns]

    with CaptureQueriesContext(connection) as reads:
        every = payloads(sessions_queries.turns_with_messages(chat.pk))
    assert len(reads.captured_queries) == 1  # payloads made from it read nothing more
    assert every == payloads(orm.order_by("id"))
    assert {p["turnId"]: p["parentTurnId"] for p in every}["helper"] == answered.turn_id
    assert {p["turnId"]: p["content"] for p in every}[answered.turn_id] == "an answer"
    in_flight = payloads(sessions_queries.turns_with_messages(chat.pk, statuses=IN_FLIGHT))
    assert in_flight == payloads(orm.filter(status__in=IN_FLIGHT).order_by("id")) and len(in_flight) >= 2
    one = payloads(sessions_queries.turns_with_messages(chat.pk, turn_id=answered.turn_id))
    assert one == payloads(orm.filter(turn_id=answered.turn_id))
    assert sessions_queries.turns_with_messages(chat.pk, turn_id="none") == []
    assert sessions_queries.turns_with_messages(session_create(owner=user("dora"), title="empty").pk) == []


@pytest.mark.parametrize("exchanges", [0, 30])
def test_a_snapshot_reads_what_the_orm_reads_in_three_statements_however_long_the_session(exchanges):
    chat = _conversation(exchanges)
    nodes, turns = _orm_snapshot_rows(chat)

    with CaptureQueriesContext(connection) as reads:
        found_nodes, found_turns, active = selectors.snapshot_rows(session_id=str(chat.pk))
        # What a device's snapshot is made of, relations included, reads nothing more.
        messages = [selectors.node_dict(node) for node in found_nodes]
        turn_payloads = [selectors.turn_payload(turn) for turn in found_turns]

    assert len(reads.captured_queries) == 3
    assert messages == [selectors.node_dict(node) for node in nodes]
    assert turn_payloads == [selectors.turn_payload(turn) for turn in turns]
    assert len(messages) == 2 * exchanges + 10
    assert active == {turns[-2].client_id: [turns[-2].turn_id]}
    assert [t.status for t in found_turns][-2:] == [TurnStatus.ACTIVE, TurnStatus.QUEUED]


def test_a_send_committed_between_the_snapshots_two_reads_is_left_to_its_events(monkeypatch):
    """The messages are read, then a send commits, then the turns are read: its turn is
    left out (its events come after the snapshot), and nothing read queries again."""
    chat = _conversation(2)
    sender = chat.owner
    read = sessions_queries.instances

    def read_then_send(model, sql, params, **kwargs):
        rows = read(model, sql, params, **kwargs)
        if model is MessageNode:
            body = {"messages": [{"id": "between", "role": "user", "parts": [{"type": "text", "text": "x"}]}]}
            turn_send(session_id=chat.pk, user=sender, body=SendBody.model_validate(body))
        return rows

    monkeypatch.setattr(sessions_queries, "instances", read_then_send)
    nodes, turns, active = selectors.snapshot_rows(session_id=str(chat.pk))
    with CaptureQueriesContext(connection) as reads:
        messages = [selectors.node_dict(node) for node in nodes]
        turn_payloads = [selectors.turn_payload(turn) for turn in turns]

    assert len(reads.captured_queries) == 0
    assert "between" not in {m["id"] for m in messages}
    newest = Turn.objects.filter(session=chat).latest("id")
    assert newest.user_message is not None and newest.user_message.node_id == "between"
    assert newest.turn_id not in {t["turnId"] for t in turn_payloads} | {t for ts in active.values() for t in ts}
    assert len(turn_payloads) == Turn.objects.filter(session=chat).count() - 1


def test_the_snapshot_of_a_session_that_is_gone_is_refused():
    with pytest.raises(ChatSession.DoesNotExist):
        selectors.snapshot_rows(session_id=str(uuid.uuid4()))


@pytest.mark.django_db(transaction=True)  # the reads run on database threads: committed rows
async def test_devices_connecting_together_share_one_read_per_session(monkeypatch):
    from asgiref.sync import sync_to_async

    chats = [await sync_to_async(_conversation)(exchanges) for exchanges in (2, 5)]
    expected = [await sync_to_async(selectors.snapshot_rows)(session_id=str(chat.pk)) for chat in chats]
    reads: list[str] = []
    read_rows = selectors.snapshot_rows

    def counted(*, session_id: str) -> selectors.SnapshotRows:
        reads.append(session_id)
        return read_rows(session_id=session_id)

    monkeypatch.setattr(selectors, "snapshot_rows", counted)
    asked = [str(chats[i % 2].pk) for i in range(12)] + [str(uuid.uuid4())]
    found = await asyncio.gather(*(selectors.snapshot_rows_shared(s) for s in asked), return_exceptions=True)

    for session_id, rows in zip(asked[:-1], found, strict=False):
        nodes, turns, active = expected[0 if session_id == str(chats[0].pk) else 1]
        assert not isinstance(rows, BaseException)
        assert [n.node_id for n in rows[0]] == [n.node_id for n in nodes]
        assert ([t.turn_id for t in rows[1]], rows[2]) == ([t.turn_id for t in turns], active)
    assert isinstance(found[-1], ChatSession.DoesNotExist)  # only the device asking for it
    # The first device's read runs alone; those asking meanwhile share the next ones.
    assert len(reads) < len(asked) and set(reads) == set(asked)
