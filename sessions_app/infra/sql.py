# ruff: noqa: S608 - table and column names come quoted from the models' metadata; values are parameters.
"""Small helpers for the few plain SQL statements the app keeps on its hot paths: quoted
table and column names from the models' metadata, placeholders, and values adapted as the
database stores them. Every value goes to the database as a parameter."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, QuerySet
from django.db.models.constants import OnConflict

M = TypeVar("M", bound=Model)


def database() -> BaseDatabaseWrapper:
    """The connection itself, not Django's proxy of it: a field's adapter reads its
    attributes many times per value."""
    return connections[DEFAULT_DB_ALIAS]


# Quoted names are remembered: a process talks to one database, and reaching its
# connection (a thread-local lookup) for each name cost a read ~2 µs a name.


@functools.cache
def table(model: type[Model]) -> str:
    return database().ops.quote_name(model._meta.db_table)


@functools.cache
def column(model: type[Model], field: str) -> str:
    return database().ops.quote_name(model._meta.get_field(field).column)  # type: ignore[union-attr,arg-type]


def columns(model: type[Model], fields: Iterable[str]) -> str:
    """A comma-separated column list, for rows read as plain tuples in that order."""
    return ", ".join(column(model, field) for field in fields)


def marks(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def values(model: type[Model], field: str, items: Iterable[Any]) -> list[Any]:
    """Values as the database stores them (a UUID is text on SQLite, a uuid on PostgreSQL)."""
    model_field, db = model._meta.get_field(field), database()
    return [model_field.get_db_prep_value(item, db) for item in items]  # type: ignore[union-attr]


def fetch(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    with database().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any]) -> int:
    """Run one statement; the number of rows it changed."""
    with database().cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


@functools.cache
def select_list(model: type[Model], alias: str = "", fields: tuple[str, ...] | None = None) -> str:
    """The select list `instances` reads: the model's columns (or those of `fields`), in
    the model's field order, each prefixed with `alias.` if given."""
    prefix = f"{alias}." if alias else ""
    quote = database().ops.quote_name
    return ", ".join(f"{prefix}{quote(str(f.column))}" for f in _fields(model, fields))


def instances(
    model: type[M], sql: str, params: Sequence[Any], *, fields: tuple[str, ...] | None = None, extra: Sequence[str] = ()
) -> list[M]:
    """The rows of `sql` as model instances, as `model.objects.raw(sql, params)` gives
    them, for a statement selecting `select_list(model, fields=fields)` then one column per
    name of `extra` (set on each instance as an attribute, unconverted). A RawQuerySet
    works out, on every query, the cursor's columns, the model's init order and each
    column's converters (~75 µs of Python per read here, for a read the database answers in
    ~20): here they are worked out once per model and database."""
    db = database()
    attnames, converters = _reader(model, fields, db.vendor)
    width = len(attnames)
    found = []
    for row in fetch(sql, params):
        values = list(row[:width])
        for index, field_converters, expression in converters:
            value = values[index]
            for convert in field_converters:
                value = convert(value, expression, db)
            values[index] = value
        instance = model.from_db(DEFAULT_DB_ALIAS, attnames, values)
        for name, value in zip(extra, row[width:], strict=True):
            setattr(instance, name, value)
        found.append(instance)
    return found


def _fields(model: type[Model], names: Sequence[str] | None) -> list[Field[Any, Any]]:
    concrete: list[Field[Any, Any]] = list(model._meta.concrete_fields)
    if names is None:
        return concrete
    return [f for f in concrete if f.name in names or f.attname in names]


@functools.cache
def _reader(
    model: type[Model], names: tuple[str, ...] | None, vendor: str
) -> tuple[list[str], list[tuple[int, list[Callable[..., Any]], Any]]]:
    """The attribute names of the columns `instances` reads and, for each column that
    has any, the converters the ORM's compiler would apply (the database's, then the
    field's: datetimes, UUIDs and JSON on SQLite, for instance). Per vendor: a process
    talks to one database."""
    db = database()
    fields = _fields(model, names)
    converters = []
    for index, field in enumerate(fields):
        expression = field.get_col(model._meta.db_table)
        found = db.ops.get_db_converters(expression) + expression.get_db_converters(db)
        if found:
            converters.append((index, found, expression))
    return [f.attname for f in fields], converters


def unique_row(queryset: QuerySet[M]) -> M | None:
    """The row of a lookup by a unique key, or None: `queryset.first()` without the
    `ORDER BY pk` that `first()` adds to an unordered queryset. Compiling that ordering is
    ~40% of such a read's Python when related models are selected (a turn with its
    messages: 1.13 -> 0.71 ms), for a statement that can match one row only."""
    return next(iter(queryset[:1]), None)


def update(model: type[Model], changes: Mapping[str, Any], where: Mapping[str, Any]) -> int:
    """`model.objects.filter(**where).update(**changes)` for plain values and equality
    filters (a list or tuple: IN), as one statement that skips the ORM's compilation
    (~0.2 ms of Python per update here; a cancel and a turn's end make three). Values go
    through their field's `get_db_prep_save` (filters: `get_db_prep_value`), as in the ORM's
    own update; like it, no signal and no `auto_now`. The number of rows changed."""
    db = database()
    assignments, conditions, params = [], [], []
    for name, value in changes.items():
        field: Any = model._meta.get_field(name)
        assignments.append(f"{db.ops.quote_name(field.column)} = %s")
        params.append(field.get_db_prep_save(value, db))
    for name, value in where.items():
        field = model._meta.get_field(name)
        if isinstance(value, list | tuple):
            conditions.append(f"{db.ops.quote_name(field.column)} IN ({marks(value)})")
            params.extend(field.get_db_prep_value(item, db) for item in value)
        else:
            conditions.append(f"{db.ops.quote_name(field.column)} = %s")
            params.append(field.get_db_prep_value(value, db))
    return execute(f"UPDATE {table(model)} SET {', '.join(assignments)} WHERE {' AND '.join(conditions)}", params)


# Values per INSERT statement at most: under SQLite's oldest bound on parameters (999).
_PARAMETERS_PER_STATEMENT = 900


def insert_new(objs: Sequence[Model]) -> None:
    """Insert new instances of one model, one `INSERT … VALUES (…), (…) RETURNING id` per
    batch, and set their primary keys (the turns and messages of a set of sends: decision
    016 measured `bulk_create` at ~0.15 ms of Python a row there, which this skips: ~0.5 ms
    of a lone send). Each value goes through its field's `pre_save` and `get_db_prep_save`,
    as Django's own insert does (defaults, `auto_now_add`, JSON, UUIDs per database).
    Instances hold plain values (no expressions); a related instance assigned before it
    was saved gives its key now (as `bulk_create` does), an unsaved one is an error."""
    if not objs:
        return
    model = type(objs[0])
    pk = model._meta.pk
    assert pk is not None
    db = database()
    fields = [f for f in model._meta.concrete_fields if f is not pk and not f.generated]
    for obj in objs:
        _take_related_keys(obj, fields)
    rows = [[field.get_db_prep_save(field.pre_save(obj, True), db) for field in fields] for obj in objs]
    head = f"INSERT INTO {table(model)} ({', '.join(db.ops.quote_name(f.column) for f in fields)})"  # type: ignore[arg-type]
    tail = f"RETURNING {db.ops.quote_name(pk.column)}"  # type: ignore[arg-type]
    keys: list[Any] = []
    with db.cursor() as cursor:
        for sql, params in _insert_statements(head, tail, rows):
            cursor.execute(sql, params)
            keys.extend(key for (key,) in cursor.fetchall())  # in VALUES order, as bulk_create relies on
    for obj, key in zip(objs, keys, strict=True):
        obj.pk = key


def insert_rows(
    model: type[Model], fields: Sequence[str], rows: Sequence[Sequence[Any]], *, ignore_conflicts: bool = False
) -> None:
    """Insert rows of values already in the database's form (`values`) into `fields` of
    `model`, a statement per batch; with `ignore_conflicts` a row that would break a unique
    constraint is skipped, as `bulk_create(..., ignore_conflicts=True)` does. For many rows
    that share most of their values (the event archive: a few sessions, one time for every
    row), which `bulk_create` would adapt value by value: ~20x the statement's own time."""
    if not rows:
        return
    db = database()
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    model_fields = [model._meta.get_field(name) for name in fields]
    head = f"{db.ops.insert_statement(on_conflict=on_conflict)} {table(model)} ({columns(model, fields)})"
    tail = db.ops.on_conflict_suffix_sql(model_fields, on_conflict, None, None)
    with db.cursor() as cursor:
        for sql, params in _insert_statements(head, tail, rows):
            cursor.execute(sql, params)


def _insert_statements(head: str, tail: str, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, list[Any]]]:
    """`head VALUES (…), (…) tail` for the rows, as many statements as the bound on
    parameters asks, each with its parameters."""
    row = f"({marks(rows[0])})"
    per_statement = max(_PARAMETERS_PER_STATEMENT // max(len(rows[0]), 1), 1)
    for start in range(0, len(rows), per_statement):
        batch = rows[start : start + per_statement]
        yield f"{head} VALUES {', '.join([row] * len(batch))} {tail}", [value for values in batch for value in values]


def _take_related_keys(obj: Model, fields: Sequence[Any]) -> None:
    for field in fields:
        if field.is_relation and getattr(obj, field.attname) is None:
            related = getattr(obj, field.name)  # the assigned instance, if any (no query)
            if related is not None:
                if related.pk is None:
                    raise ValueError(f"{field.name} of {obj!r} is not saved yet")
                setattr(obj, field.attname, related.pk)
