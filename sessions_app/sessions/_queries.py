# ruff: noqa: S608 - table and column names come quoted from the models' metadata; values are parameters.
"""Plain statements for the sessions package's hot reads (a compiled ORM query costs ~0.3 ms
warm, several times the database's answer: decision 015): the membership read on the path
of every send and cancel, and what a device's snapshot or resume reads when it connects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS

from sessions_app.infra.sql import column, columns, database, fetch, instances, marks, select_list, table, values
from sessions_app.models import ChatSession, Membership, MessageNode, Turn, TurnStatus


def sessions_of_members(session_ids: Sequence[Any], user_ids: Sequence[Any]) -> list[ChatSession]:
    """The sessions among `session_ids` that some user of `user_ids` belongs to, a row per
    such membership, each with `member_id` (that user's id)."""
    if not session_ids or not user_ids:
        return []
    sessions, members = values(ChatSession, "id", session_ids), values(Membership, "user", user_ids)
    session_fk, user_fk = column(Membership, "session"), column(Membership, "user")
    session_pk = column(ChatSession, "id")
    sql = (
        f"SELECT {select_list(ChatSession, 's')}, m.{user_fk} FROM {table(ChatSession)} s "
        f"JOIN {table(Membership)} m ON m.{session_fk} = s.{session_pk} "
        f"WHERE s.{session_pk} IN ({marks(sessions)}) AND m.{user_fk} IN ({marks(members)})"
    )
    return instances(ChatSession, sql, [*sessions, *members], extra=("member_id",))


def active_turn_ids(session_id: Any) -> list[tuple[str, str]]:
    """(clientId, turnId) of the session's active turns, oldest first."""
    [key] = values(Turn, "session", [session_id])
    session, status = column(Turn, "session"), column(Turn, "status")
    sql = (
        f"SELECT {columns(Turn, ('client_id', 'turn_id'))} FROM {table(Turn)} "
        f"WHERE {session} = %s AND {status} = %s ORDER BY {column(Turn, 'id')}"
    )
    return [(client_id, turn_id) for client_id, turn_id in fetch(sql, [key, TurnStatus.ACTIVE])]


def session_exists(session_id: Any) -> bool:
    [key] = values(ChatSession, "id", [session_id])
    pk = column(ChatSession, "id")
    return bool(fetch(f"SELECT 1 FROM {table(ChatSession)} WHERE {pk} = %s", [key]))


def session_rows(session_id: Any) -> tuple[list[MessageNode], list[Turn]]:
    """Every message and every turn of a session, each list in creation order (by id), with
    the relations between them set from the rows themselves: a node's `parent`, `fork_of`
    and `turn`, a turn's `user_message`, `assistant_message` and `parent_turn` all belong to
    the same session, so reading them costs no join, no query and no further instance. (The
    ORM's `select_related` built four instances per node and per turn, ~70% of a snapshot's
    time.)

    The messages are read first, then the turns, each by a statement of its own: a send that
    commits between the two has its turn read but not its messages. Such a turn is left out
    (it is newer than anything the caller read before: its events come after), so that every
    relation read here is in hand and reading one never queries (the snapshot is built on
    the event loop). A turn always commits with its messages, so every other turn's are
    read, and every message's turn is."""
    [key] = values(MessageNode, "session", [session_id])
    nodes: list[MessageNode] = instances(MessageNode, _in_session(MessageNode), [key])
    node_by_pk = {node.pk: node for node in nodes}
    turns = [
        turn
        for turn in instances(Turn, _in_session(Turn), [key])
        if all(pk is None or pk in node_by_pk for pk in (turn.user_message_id, turn.assistant_message_id))
    ]
    turn_by_pk = {turn.pk: turn for turn in turns}
    for node in nodes:
        _link(node, "parent", node.parent_id, node_by_pk)
        _link(node, "fork_of", node.fork_of_id, node_by_pk)
        if node.turn_id is not None and node.turn_id not in turn_by_pk:
            node.turn_id = None  # its turn was deleted between the two reads: SET_NULL's outcome
        _link(node, "turn", node.turn_id, turn_by_pk)
    for turn in turns:
        _link(turn, "user_message", turn.user_message_id, node_by_pk)
        _link(turn, "assistant_message", turn.assistant_message_id, node_by_pk)
        _link(turn, "parent_turn", turn.parent_turn_id, turn_by_pk)
    return nodes, turns


def _in_session(model: type[MessageNode] | type[Turn]) -> str:
    return (
        f"SELECT {select_list(model)} FROM {table(model)} "
        f"WHERE {column(model, 'session')} = %s ORDER BY {column(model, 'id')}"
    )


def turns_with_messages(session_id: Any, *, turn_id: str | None = None, statuses: Sequence[str] = ()) -> list[Turn]:
    """A session's turns in creation order (the one `turn_id`, or those of `statuses`, if
    given), each with what a turn's payload shows of its relations set, in one statement:
    its user message's and answer's ids (the answer's parts too) and its parent turn's
    turnId. The ORM's `select_related` of the three compiled to ~1 ms of Python for a read
    the database answers in ~0.1 (a turn's detail, a session's detail and its turns list,
    which clients poll)."""
    [key] = values(Turn, "session", [session_id])
    turn_pk, node_pk = column(Turn, "id"), column(MessageNode, "id")
    conditions, params = [f"t.{column(Turn, 'session')} = %s"], [key]
    if turn_id is not None:
        conditions.append(f"t.{column(Turn, 'turn_id')} = %s")
        params.append(turn_id)
    if statuses:
        conditions.append(f"t.{column(Turn, 'status')} IN ({marks(statuses)})")
        params.extend(statuses)
    nodes, node_id = table(MessageNode), column(MessageNode, "node_id")
    sql = (
        f"SELECT {select_list(Turn, 't')}, u.{node_id}, a.{node_id}, a.{column(MessageNode, 'parts')}, "
        f"p.{column(Turn, 'turn_id')} FROM {table(Turn)} t "
        f"LEFT JOIN {nodes} u ON u.{node_pk} = t.{column(Turn, 'user_message')} "
        f"LEFT JOIN {nodes} a ON a.{node_pk} = t.{column(Turn, 'assistant_message')} "
        f"LEFT JOIN {table(Turn)} p ON p.{turn_pk} = t.{column(Turn, 'parent_turn')} "
        f"WHERE {' AND '.join(conditions)} ORDER BY t.{turn_pk}"
    )
    extra = ("user_node_id", "answer_node_id", "answer_parts", "parent_turn_id_text")
    parts: Any = MessageNode._meta.get_field("parts")
    db = database()
    turns = instances(Turn, sql, params, extra=extra)
    for turn in turns:
        row: Any = turn  # the extra columns, set as attributes
        if row.user_node_id is not None:
            _link_partial(turn, "user_message", MessageNode, id=turn.user_message_id, node_id=row.user_node_id)
        if row.answer_node_id is not None:
            answer_parts = parts.from_db_value(row.answer_parts, None, db)
            _link_partial(
                turn,
                "assistant_message",
                MessageNode,
                id=turn.assistant_message_id,
                node_id=row.answer_node_id,
                parts=answer_parts,
            )
        if row.parent_turn_id_text is not None:
            _link_partial(turn, "parent_turn", Turn, id=turn.parent_turn_id, turn_id=row.parent_turn_id_text)
    return turns


def _link_partial(instance: Turn, relation: str, model: type[MessageNode] | type[Turn], **loaded: Any) -> None:
    """Set a relation to an instance of `model` with only the `loaded` fields (the others
    deferred), as `select_related(...).only(...)` would."""
    related = model.from_db(DEFAULT_DB_ALIAS, list(loaded), list(loaded.values()))
    _link(instance, relation, related.pk, {related.pk: related})


def _link(instance: MessageNode | Turn, relation: str, key: int | None, rows: Mapping[int, Any]) -> None:
    """Set a foreign key's related instance, as `select_related` does (without a query)."""
    if key is not None and key in rows:
        type(instance)._meta.get_field(relation).set_cached_value(instance, rows[key])  # type: ignore[union-attr]
