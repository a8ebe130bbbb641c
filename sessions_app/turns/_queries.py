# ruff: noqa: S608 - table and column names come quoted from the models' metadata; values are parameters.
"""The reads (and the claim) on the path of a turn's start and of a cancel, as plain SQL
the ORM does not have to compile (decisions 015 and 016).

Building and compiling an ORM query costs this machine about 0.3 ms warm and 0.8 ms on a
process that was idle a moment before, five times what the database takes to answer; a
send, a claim, a cancel and a turn's end each read several times while a person waits for
the answer. Each function here is one parameterised statement, returning model instances
as the ORM would (`infra.sql.instances`), or plain rows where only a few values are needed
(a claim's turns and branch), so that SQLite and PostgreSQL read the same rows. Writes
other than the claim and the link of new turns to their messages stay with the ORM
(transitions.py). Private to the turns package.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from sessions_app.infra.sql import (
    column,
    columns,
    database,
    execute,
    fetch,
    instances,
    marks,
    select_list,
    table,
    values,
)
from sessions_app.models import IN_FLIGHT, ChatSession, MessageNode, NodeStatus, Role, Turn, TurnStatus, oldest_first

UNSETTLED = (NodeStatus.QUEUED, NodeStatus.STREAMING)


def in_flight_turns(session_ids: Sequence[Any]) -> list[Turn]:
    """The queued and active turns of some sessions, oldest first (sorted here: see
    `models.oldest_first`)."""
    if not session_ids:
        return []
    sessions = values(Turn, "session", session_ids)
    sql = (
        f"SELECT {select_list(Turn)} FROM {table(Turn)} WHERE {column(Turn, 'session')} IN ({marks(sessions)}) "
        f"AND {column(Turn, 'status')} IN ({marks(IN_FLIGHT)})"
    )
    return oldest_first(instances(Turn, sql, [*sessions, *IN_FLIGHT]))


def newest_settled_nodes(session_ids: Sequence[Any]) -> dict[Any, MessageNode]:
    """Each session's newest node that is neither queued nor streaming (the end of its
    current branch), with only `id`, `node_id` and `session_id` loaded; an index lookup per
    session (node_session_newest)."""
    if not session_ids:
        return {}
    sessions = values(ChatSession, "id", session_ids)
    node, node_session = column(MessageNode, "id"), column(MessageNode, "session")
    settled = f"{column(MessageNode, 'status')} NOT IN ({marks(UNSETTLED)})"
    loaded = ("id", "node_id", "session")
    if len(sessions) == 1:  # a lone send: the plain form
        sql = (
            f"SELECT {select_list(MessageNode, fields=loaded)} FROM {table(MessageNode)} "
            f"WHERE {node_session} = %s AND {settled} ORDER BY {node} DESC LIMIT 1"
        )
        return {n.session_id: n for n in instances(MessageNode, sql, [*sessions, *UNSETTLED], fields=loaded)}
    newest = (
        f"SELECT (SELECT n.{node} FROM {table(MessageNode)} n WHERE n.{node_session} = s.{column(ChatSession, 'id')} "
        f"AND n.{settled} ORDER BY n.{node} DESC LIMIT 1) "
        f"FROM {table(ChatSession)} s WHERE s.{column(ChatSession, 'id')} IN ({marks(sessions)})"
    )
    sql = f"SELECT {select_list(MessageNode, fields=loaded)} FROM {table(MessageNode)} WHERE {node} IN ({newest})"
    return {n.session_id: n for n in instances(MessageNode, sql, [*UNSETTLED, *sessions], fields=loaded)}


# What a new node's parent needs: its pk, and its id for the `message` event.
PARENT_FIELDS = ("id", "node_id")


def parent_node(pk: int | None) -> MessageNode | None:
    """The node `pk` with only PARENT_FIELDS loaded, or None (no pk, or no such node)."""
    if pk is None:
        return None
    sql = (
        f"SELECT {select_list(MessageNode, fields=PARENT_FIELDS)} FROM {table(MessageNode)} "
        f"WHERE {column(MessageNode, 'id')} = %s"
    )
    found = instances(MessageNode, sql, [pk], fields=PARENT_FIELDS)
    return found[0] if found else None


def parent_of_newest_first_message(turn_pks: Sequence[int], *, answer: bool = False) -> tuple[bool, MessageNode | None]:
    """Of the first user message of each of these turns (those that sent one), the newest
    one's parent, or with `answer` its turn's answer, PARENT_FIELDS loaded: `(True, node)`,
    the node None for a root (or a turn with no answer); or `(False, None)` when none of the
    turns sent a message (regenerations, an agent answering someone else's). One statement."""
    if not turn_pks:
        return False, None
    node, parent, nodes = column(MessageNode, "id"), column(MessageNode, "parent"), table(MessageNode)
    firsts = (
        f"SELECT MIN(u.{node}) AS first_pk FROM {nodes} u WHERE u.{column(MessageNode, 'turn')} IN ({marks(turn_pks)}) "
        f"AND u.{column(MessageNode, 'role')} = %s GROUP BY u.{column(MessageNode, 'turn')}"
    )
    if answer:
        turn = column(Turn, "id")
        target = (
            f"LEFT JOIN {table(Turn)} t ON t.{turn} = n.{column(MessageNode, 'turn')} "
            f"LEFT JOIN {nodes} p ON p.{node} = t.{column(Turn, 'assistant_message')}"
        )
    else:
        target = f"LEFT JOIN {nodes} p ON p.{node} = n.{parent}"
    sql = (
        f"SELECT {select_list(MessageNode, alias='p', fields=PARENT_FIELDS)}, n.{node} FROM {nodes} n "
        f"{target} WHERE n.{node} = (SELECT MAX(first_pk) FROM ({firsts}) firsts)"
    )
    found = instances(MessageNode, sql, [*turn_pks, Role.USER], fields=PARENT_FIELDS, extra=("first_message_pk",))
    if not found:
        return False, None
    return True, found[0] if found[0].pk is not None else None


class ClaimRow(NamedTuple):
    """A claimed turn as its worker needs it."""

    pk: int
    session_id: uuid.UUID
    turn_id: str
    client_id: str
    model: str
    model_options: dict[str, Any]
    cancel_requested_by: str
    user_message_id: int | None
    assistant_message_id: int | None


def claim_turns(turn_pks: Sequence[int], worker_id: str) -> list[ClaimRow]:
    """Mark those of the turns that are active and claimed by no worker as `worker_id`'s,
    in one statement that returns them (oldest first), as plain rows: a model instance per
    turn was half of a lone claim's time. Two workers claiming one turn at the same moment
    cannot both get it: the update re-checks `worker_id` under the row's lock (PostgreSQL)
    or the database's write lock (SQLite)."""
    if not turn_pks:
        return []
    db = database()
    sql = (
        f"UPDATE {table(Turn)} SET {column(Turn, 'worker_id')} = %s "
        f"WHERE {column(Turn, 'id')} IN ({marks(turn_pks)}) "
        f"AND {column(Turn, 'status')} = %s AND {column(Turn, 'worker_id')} = %s "
        f"RETURNING {columns(Turn, _CLAIM_FIELDS)}"
    )
    rows = fetch(sql, [worker_id, *turn_pks, TurnStatus.ACTIVE, ""])
    session, options = Turn._meta.get_field("session"), Turn._meta.get_field("model_options")
    claimed = []
    for row in rows:
        turn = ClaimRow(*row)
        claimed.append(
            turn._replace(
                session_id=session.target_field.to_python(turn.session_id),  # type: ignore[union-attr]  # text on SQLite
                model_options=options.from_db_value(turn.model_options, None, db),  # type: ignore[union-attr,arg-type]
            )
        )
    return sorted(claimed, key=lambda row: row.pk)


# The columns of a ClaimRow, in its order.
_CLAIM_FIELDS = (
    "id",
    "session",
    "turn_id",
    "client_id",
    "model",
    "model_options",
    "cancel_requested_by",
    "user_message",
    "assistant_message",
)


class ContextRow(NamedTuple):
    """A node as a turn's context needs it (the rule: tree.py)."""

    pk: int
    node_id: str
    parent_id: int | None
    role: str
    parts: list[dict[str, Any]]
    fork_of_id: int | None
    turn_pk: int | None
    session_id: Any  # as the database stores it (text on SQLite): it only tells sessions apart


def context_rows(user_message_pks: Iterable[int], session_ids: Iterable[Any]) -> list[ContextRow]:
    """What the contexts of turns asking these user messages are made of (tree.py), in one
    recursive query read as plain rows: each message's ancestors, every child of those (the
    siblings along the branch, the answers) and the sessions' roots, and below each such
    sibling user message its exchange (the rest of its send and its answers). Not the rest of
    the session: a long conversation with many edits holds many nodes no context needs, and
    a model instance each was most of a claim's time."""
    seeds = sorted(set(user_message_pks))
    sessions = values(MessageNode, "session", set(session_ids))
    if not seeds or not sessions:
        return []
    node, parent, role, session = (
        column(MessageNode, "id"),
        column(MessageNode, "parent"),
        column(MessageNode, "role"),
        column(MessageNode, "session"),
    )
    nodes = table(MessageNode)
    sql = (
        f"WITH RECURSIVE up(id) AS ("
        f"SELECT {node} FROM {nodes} WHERE {node} IN ({marks(seeds)}) "
        f"UNION SELECT n.{parent} FROM {nodes} n JOIN up ON n.{node} = up.id WHERE n.{parent} IS NOT NULL), "
        f"near(id, role) AS ("
        f"SELECT {node}, {role} FROM {nodes} WHERE {parent} IN (SELECT id FROM up) "
        f"OR ({parent} IS NULL AND {session} IN ({marks(sessions)})) "
        f"UNION SELECT n.{node}, n.{role} FROM {nodes} n JOIN near x ON n.{parent} = x.id "
        f"WHERE x.role = %s AND x.id NOT IN (SELECT id FROM up)) "
        f"SELECT {columns(MessageNode, _CONTEXT_FIELDS)} FROM {nodes} WHERE {node} IN (SELECT id FROM near)"
    )
    db = database()
    parts = MessageNode._meta.get_field("parts")
    return [
        ContextRow(pk, node_id, parent_id, node_role, parts.from_db_value(raw, None, db), fork_of_id, turn_pk, sid)  # type: ignore[union-attr,arg-type]
        for pk, node_id, parent_id, node_role, raw, fork_of_id, turn_pk, sid in fetch(
            sql, [*seeds, *sessions, Role.USER]
        )
    ]


# The columns of a ContextRow, in its order.
_CONTEXT_FIELDS = ("id", "node_id", "parent", "role", "parts", "fork_of", "turn", "session")


def cancellable_turns(
    session_id: Any, *, only_active: bool, client_id: str | None = None, turn_id: str | None = None
) -> list[Turn]:
    """The session's in-flight turns no cancel was asked for yet, oldest first; only the
    active ones, those of one clientId, or the one turnId when asked."""
    conditions = [
        f"{column(Turn, 'session')} = %s",
        f"{column(Turn, 'cancel_requested_by')} = %s",
    ]
    params: list[Any] = [*values(Turn, "session", [session_id]), ""]
    statuses = (TurnStatus.ACTIVE,) if only_active else IN_FLIGHT
    conditions.append(f"{column(Turn, 'status')} IN ({marks(statuses)})")
    params.extend(statuses)
    for field, value in (("client_id", client_id), ("turn_id", turn_id)):
        if value is not None:
            conditions.append(f"{column(Turn, field)} = %s")
            params.append(value)
    sql = f"SELECT {select_list(Turn)} FROM {table(Turn)} WHERE {' AND '.join(conditions)}"
    return oldest_first(instances(Turn, sql, params))


def link_turns_to_messages(turn_pks: Sequence[int]) -> None:
    """Point each new turn at its answer and at the answer's parent, its user message (the
    regenerated answer's parent, for a regenerate), in one statement for any number."""
    if not turn_pks:
        return
    turn, node = table(Turn), table(MessageNode)
    answer_of_turn = (
        f"FROM {node} n WHERE n.{column(MessageNode, 'turn')} = {turn}.{column(Turn, 'id')} "
        f"AND n.{column(MessageNode, 'role')} = %s"
    )
    sql = (
        f"UPDATE {turn} SET "
        f"{column(Turn, 'assistant_message')} = (SELECT n.{column(MessageNode, 'id')} {answer_of_turn}), "
        f"{column(Turn, 'user_message')} = (SELECT n.{column(MessageNode, 'parent')} {answer_of_turn}) "
        f"WHERE {column(Turn, 'id')} IN ({marks(turn_pks)})"
    )
    execute(sql, [Role.ASSISTANT, Role.ASSISTANT, *turn_pks])
