# ruff: noqa: S608 - the SQL built here interpolates only quoted table and column names from
# the models' metadata and "%s" marks; every value goes to the database as a parameter.
"""The reads (and the claim) on the path of a turn's start and of a cancel, and the inserts
of a set of sends, as SQL the ORM does not have to compile (decisions 015 and 016).

Building and compiling an ORM query costs this machine about 0.3 ms warm and 0.8 ms on a
process that was idle a moment before, five times what the database takes to answer; a
send, a claim, a cancel and a turn's end each read several times while a person waits for
the answer. Each function here is one such read, returning model instances as the ORM
would (`Model.objects.raw`), or plain rows where only a few values are needed (a claim's
turns and branch), with table and column names from the models' metadata and values
adapted by their fields, so that SQLite and PostgreSQL read the same rows. Other
writes, and every read off these paths, stay with the ORM.

`insert_new` is `bulk_create` for the rows of a set of sends: each value still goes
through its field's `pre_save` and `get_db_prep_save`, as the ORM's insert compiler does,
but nothing compiles per value (bulk_create spent ~0.15 ms a row there: decision 016);
`archive_events` writes the event archive the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignKey, Model
from django.db.models.constants import OnConflict
from django.utils import timezone

from sessions_app.models import (
    IN_FLIGHT,
    ChatSession,
    EventRecord,
    Membership,
    MessageNode,
    NodeStatus,
    Role,
    Turn,
    TurnStatus,
)

UNSETTLED = (NodeStatus.QUEUED, NodeStatus.STREAMING)

M = TypeVar("M", bound=Model)


def _db() -> BaseDatabaseWrapper:
    """The connection itself, not Django's proxy of it: a field's adapter reads its
    attributes many times per value."""
    return connections[DEFAULT_DB_ALIAS]


def _table(model: type[Model]) -> str:
    return _db().ops.quote_name(model._meta.db_table)


def _column(model: type[Model], field: str) -> str:
    return _db().ops.quote_name(model._meta.get_field(field).column)  # type: ignore[union-attr,arg-type]


def _columns(model: type[Model], fields: Iterable[str]) -> str:
    """A comma-separated column list, for rows read as plain tuples in that order."""
    return ", ".join(_column(model, field) for field in fields)


def _fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with _db().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _values(model: type[Model], field: str, values: Iterable[Any]) -> list[Any]:
    """Values as the database stores them (a UUID is text on SQLite, a uuid on PostgreSQL)."""
    model_field, db = model._meta.get_field(field), _db()
    return [model_field.get_db_prep_value(value, db) for value in values]  # type: ignore[union-attr]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def sessions_of_members(session_ids: Sequence[Any], user_ids: Sequence[Any]) -> list[ChatSession]:
    """The sessions among `session_ids` that some user of `user_ids` belongs to, a row per
    such membership, each with `member_id` (that user's id)."""
    if not session_ids or not user_ids:
        return []
    sessions, members = _values(ChatSession, "id", session_ids), _values(Membership, "user", user_ids)
    session_fk, user_fk = _column(Membership, "session"), _column(Membership, "user")
    sql = (
        f"SELECT s.*, m.{user_fk} AS member_id FROM {_table(ChatSession)} s "
        f"JOIN {_table(Membership)} m ON m.{session_fk} = s.{_column(ChatSession, 'id')} "
        f"WHERE s.{_column(ChatSession, 'id')} IN ({_marks(sessions)}) AND m.{user_fk} IN ({_marks(members)})"
    )
    return list(ChatSession.objects.raw(sql, [*sessions, *members]))


def in_flight_turns(session_ids: Sequence[Any]) -> list[Turn]:
    """The queued and active turns of some sessions, oldest first."""
    if not session_ids:
        return []
    sessions = _values(Turn, "session", session_ids)
    sql = (
        f"SELECT * FROM {_table(Turn)} WHERE {_column(Turn, 'session')} IN ({_marks(sessions)}) "
        f"AND {_column(Turn, 'status')} IN ({_marks(IN_FLIGHT)}) ORDER BY {_column(Turn, 'id')}"
    )
    return list(Turn.objects.raw(sql, [*sessions, *IN_FLIGHT]))


def newest_settled_nodes(session_ids: Sequence[Any]) -> dict[Any, MessageNode]:
    """Each session's newest node that is neither queued nor streaming (the end of its
    current branch), with only `id`, `node_id` and `session_id` loaded; an index lookup per
    session (node_session_newest)."""
    if not session_ids:
        return {}
    sessions = _values(ChatSession, "id", session_ids)
    node, node_id, node_session = (
        _column(MessageNode, "id"),
        _column(MessageNode, "node_id"),
        _column(MessageNode, "session"),
    )
    settled = f"{_column(MessageNode, 'status')} NOT IN ({_marks(UNSETTLED)})"
    if len(sessions) == 1:  # a lone send: the plain form
        sql = (
            f"SELECT {node}, {node_id}, {node_session} FROM {_table(MessageNode)} "
            f"WHERE {node_session} = %s AND {settled} ORDER BY {node} DESC LIMIT 1"
        )
        return {n.session_id: n for n in MessageNode.objects.raw(sql, [*sessions, *UNSETTLED])}
    newest = (
        f"SELECT (SELECT n.{node} FROM {_table(MessageNode)} n WHERE n.{node_session} = s.{_column(ChatSession, 'id')} "
        f"AND n.{settled} ORDER BY n.{node} DESC LIMIT 1) "
        f"FROM {_table(ChatSession)} s WHERE s.{_column(ChatSession, 'id')} IN ({_marks(sessions)})"
    )
    sql = f"SELECT {node}, {node_id}, {node_session} FROM {_table(MessageNode)} WHERE {node} IN ({newest})"
    return {n.session_id: n for n in MessageNode.objects.raw(sql, [*UNSETTLED, *sessions])}


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
    db = _db()
    sql = (
        f"UPDATE {_table(Turn)} SET {_column(Turn, 'worker_id')} = %s "
        f"WHERE {_column(Turn, 'id')} IN ({_marks(turn_pks)}) "
        f"AND {_column(Turn, 'status')} = %s AND {_column(Turn, 'worker_id')} = %s "
        f"RETURNING {_columns(Turn, _CLAIM_FIELDS)}"
    )
    rows = _fetch(sql, [worker_id, *turn_pks, TurnStatus.ACTIVE, ""])
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


class BranchNode(NamedTuple):
    """A node as a turn's context needs it."""

    pk: int
    node_id: str
    parent_id: int | None
    role: str
    parts: list[dict[str, Any]]


def ancestry(node_pks: Iterable[int]) -> dict[int, BranchNode]:
    """These nodes and all their ancestors, by pk: the branch of each, not the rest of the
    session (a session with many edits, or a long one with many branches, holds many nodes
    no context needs). One recursive query, read as plain rows: a long conversation's
    branch is many nodes, and a model instance each was most of a claim's time."""
    seeds = sorted(set(node_pks))
    if not seeds:
        return {}
    node, parent = _column(MessageNode, "id"), _column(MessageNode, "parent")
    sql = (
        f"WITH RECURSIVE branch(id) AS ("
        f"SELECT {node} FROM {_table(MessageNode)} WHERE {node} IN ({_marks(seeds)}) "
        f"UNION SELECT n.{parent} FROM {_table(MessageNode)} n JOIN branch b ON n.{node} = b.id "
        f"WHERE n.{parent} IS NOT NULL) "
        f"SELECT {_columns(MessageNode, ('id', 'node_id', 'parent', 'role', 'parts'))} "
        f"FROM {_table(MessageNode)} WHERE {node} IN (SELECT id FROM branch)"
    )
    db = _db()
    parts = MessageNode._meta.get_field("parts")
    return {
        pk: BranchNode(pk, node_id, parent_id, role, parts.from_db_value(value, None, db))  # type: ignore[union-attr,arg-type]
        for pk, node_id, parent_id, role, value in _fetch(sql, seeds)
    }


def cancellable_turns(
    session_id: Any, *, only_active: bool, client_id: str | None = None, turn_id: str | None = None
) -> list[Turn]:
    """The session's in-flight turns no cancel was asked for yet, oldest first; only the
    active ones, those of one clientId, or the one turnId when asked."""
    conditions = [
        f"{_column(Turn, 'session')} = %s",
        f"{_column(Turn, 'cancel_requested_by')} = %s",
    ]
    params: list[Any] = [*_values(Turn, "session", [session_id]), ""]
    statuses = (TurnStatus.ACTIVE,) if only_active else IN_FLIGHT
    conditions.append(f"{_column(Turn, 'status')} IN ({_marks(statuses)})")
    params.extend(statuses)
    for field, value in (("client_id", client_id), ("turn_id", turn_id)):
        if value is not None:
            conditions.append(f"{_column(Turn, field)} = %s")
            params.append(value)
    sql = f"SELECT * FROM {_table(Turn)} WHERE {' AND '.join(conditions)} ORDER BY {_column(Turn, 'id')}"
    return list(Turn.objects.raw(sql, params))


def insert_new(objs: Sequence[M]) -> None:
    """Insert new instances of one model and set their primary keys, as `bulk_create`
    would. Falls back to `bulk_create` where the database cannot return the new keys, or
    the model returns more than its key. Instances hold plain values: expressions are not
    supported."""
    if not objs:
        return
    model = type(objs[0])
    opts = model._meta
    pk = opts.pk
    assert pk is not None
    db = _db()
    if (
        not db.features.can_return_rows_from_bulk_insert
        or opts.db_returning_fields != [pk]
        or any(obj.pk is not None for obj in objs)
    ):
        model._default_manager.bulk_create(objs)
        return
    fields = [f for f in opts.concrete_fields if f is not pk and not f.generated]
    relations = [f for f in fields if isinstance(f, ForeignKey)]
    for obj in objs:
        _take_saved_relations(obj, relations)
    rows = [[field.get_db_prep_save(field.pre_save(obj, True), db) for field in fields] for obj in objs]
    keys = _insert_rows(model, fields, rows, returning=pk)
    for obj, key in zip(objs, keys, strict=True):  # rows come back in VALUES order, as bulk_create relies on
        obj.pk = key
        obj._state.adding = False
        obj._state.db = db.alias


def _insert_rows(
    model: type[Model],
    fields: Sequence[Field[Any, Any]],
    rows: Sequence[Sequence[Any]],
    *,
    returning: Field[Any, Any] | None = None,
    ignore_conflicts: bool = False,
) -> list[Any]:
    """Insert rows of values already adapted for the database, a statement per batch of
    its parameter limit; the `returning` column of each row, in order."""
    db = _db()
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    head = (
        f"{db.ops.insert_statement(on_conflict=on_conflict)} {_table(model)} "
        f"({', '.join(db.ops.quote_name(f.column) for f in fields)}) VALUES "  # type: ignore[arg-type]
    )
    suffix: str = db.ops.on_conflict_suffix_sql(fields, on_conflict, None, None)  # type: ignore[arg-type]
    key = "" if returning is None else f" RETURNING {db.ops.quote_name(returning.column)}"  # type: ignore[arg-type]
    tail = f"{suffix}{key}"
    row = f"({_marks(fields)})"
    size = max(db.ops.bulk_batch_size(fields, rows), 1)  # type: ignore[arg-type]
    returned: list[Any] = []
    with db.cursor() as cursor:
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            cursor.execute(f"{head}{', '.join([row] * len(batch))} {tail}", [value for r in batch for value in r])
            if returning is not None:
                returned.extend(value for (value,) in cursor.fetchall())
    return returned


def _take_saved_relations(obj: Model, relations: Sequence[ForeignKey[Any, Any]]) -> None:
    """A related instance assigned before it was saved: take its key now (bulk_create's
    check); an unsaved one is an error, not a NULL."""
    for field in relations:
        if getattr(obj, field.attname) is None and field.is_cached(obj):
            related = field.get_cached_value(obj)
            if related is None:
                continue
            key = getattr(related, field.target_field.attname)
            if key is None:
                raise ValueError(f"{field.name} of {obj!r} is not saved yet")
            setattr(obj, field.attname, key)


def link_turns_to_messages(turn_pks: Sequence[int]) -> None:
    """Point each new turn at its answer and at the answer's parent, its user message (the
    regenerated answer's parent, for a regenerate), in one statement for any number."""
    if not turn_pks:
        return
    turn, node = _table(Turn), _table(MessageNode)
    answer_of_turn = (
        f"FROM {node} n WHERE n.{_column(MessageNode, 'turn')} = {turn}.{_column(Turn, 'id')} "
        f"AND n.{_column(MessageNode, 'role')} = %s"
    )
    sql = (
        f"UPDATE {turn} SET "
        f"{_column(Turn, 'assistant_message')} = (SELECT n.{_column(MessageNode, 'id')} {answer_of_turn}), "
        f"{_column(Turn, 'user_message')} = (SELECT n.{_column(MessageNode, 'parent')} {answer_of_turn}) "
        f"WHERE {_column(Turn, 'id')} IN ({_marks(turn_pks)})"
    )
    with _db().cursor() as cursor:
        cursor.execute(sql, [Role.ASSISTANT, Role.ASSISTANT, *turn_pks])


ARCHIVED_FIELDS = ("session", "seq", "type", "frame", "created_at")


def archive_events(rows: Sequence[tuple[str, int, str, str]]) -> None:
    """Insert event records, (session id, seq, type, frame) each, skipping any archived
    already, all with one `created_at`. The archive's insert: no model instance and no
    field adapter per row, as the session ids repeat and the rest are plain values (a
    third of `bulk_create`'s time; decision 016)."""
    if not rows:
        return
    db = _db()
    session, *_, created_at = fields = [EventRecord._meta.get_field(name) for name in ARCHIVED_FIELDS]
    created = created_at.get_db_prep_save(timezone.now(), db)  # type: ignore[union-attr]
    sessions = {
        session_id: session.get_db_prep_save(session_id, db)  # type: ignore[union-attr]
        for session_id in {row[0] for row in rows}
    }
    values = [(sessions[session_id], seq, event_type, frame, created) for session_id, seq, event_type, frame in rows]
    _insert_rows(EventRecord, fields, values, ignore_conflicts=True)  # type: ignore[arg-type]
