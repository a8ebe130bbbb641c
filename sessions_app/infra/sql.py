"""Small helpers for the few plain SQL statements the app keeps on its hot paths: quoted
table and column names from the models' metadata, placeholders, and values adapted as the
database stores them. Every value goes to the database as a parameter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Model


def database() -> BaseDatabaseWrapper:
    """The connection itself, not Django's proxy of it: a field's adapter reads its
    attributes many times per value."""
    return connections[DEFAULT_DB_ALIAS]


def table(model: type[Model]) -> str:
    return database().ops.quote_name(model._meta.db_table)


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
