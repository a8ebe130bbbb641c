# ruff: noqa: S608 - table and column names come quoted from the models' metadata; values are parameters.
"""The membership read on the path of every send and cancel, as one plain statement (a
compiled ORM query costs ~0.3 ms warm, several times the database's answer: decision 015)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sessions_app.infra.sql import column, instances, marks, select_list, table, values
from sessions_app.models import ChatSession, Membership


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
