"""Micro-benchmark of the reads on a send's, a claim's and a cancel's path, in process, on a
new session and on one with a long history (decisions 015, 016 and 028):

    python -m bench.reads [--history 850] [--calls 300]

A temporary SQLite database; each read is called `--calls` times, and the median of the
calls is printed in microseconds. The session has two turns in flight (one active, one
queued) and, on the long one, `--history` turns that ended before them, each with its
question and answer.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def setup_django(database: Path) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=f"sqlite:///{database}",
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),  # not used by these reads
        CHAT_KEY_PREFIX=f"reads{uuid.uuid4().hex[:6]}",
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", "--noinput", verbosity=0)


def build_session(history: int) -> tuple[Any, Any]:
    from django.contrib.auth import get_user_model

    from sessions_app.models import ChatSession, Membership, MessageNode, Turn, TurnStatus

    user = get_user_model().objects.create_user(username=f"u{uuid.uuid4().hex[:6]}", password="x")
    session = ChatSession.objects.create(title="reads", owner=user)
    Membership.objects.create(session=session, user=user)
    parent = None
    for index in range(history):
        question = MessageNode.objects.create(session=session, node_id=f"q{index}", parent=parent, role="user")
        parent = MessageNode.objects.create(session=session, node_id=f"a{index}", parent=question, role="assistant")
    Turn.objects.bulk_create(
        Turn(session=session, turn_id=f"old{i}", user=user, client_id="c", status=TurnStatus.COMPLETE)
        for i in range(history)
    )
    for status in (TurnStatus.ACTIVE, TurnStatus.QUEUED):
        Turn.objects.create(session=session, turn_id=str(uuid.uuid4()), user=user, client_id="c", status=status)
    return session, user


def median_us(call: Callable[[], Any], calls: int) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--history", type=int, default=850)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chat-reads-") as workdir:
        setup_django(Path(workdir) / "reads.sqlite3")
        from sessions_app.sessions._queries import sessions_of_members
        from sessions_app.turns import _queries as turn_queries

        sessions = {"new session": build_session(0), f"{args.history} turns behind": build_session(args.history)}
        print(f"median of {args.calls} calls, µs")
        print(f"{'read':<32}" + "".join(f"{name:>22}" for name in sessions))
        reads: dict[str, Callable[[Any, Any], Any]] = {
            "memberships with sessions": lambda s, u: sessions_of_members([s.pk], [u.pk]),
            "turns in flight": lambda s, u: turn_queries.in_flight_turns([s.pk]),
            "newest settled message": lambda s, u: turn_queries.newest_settled_nodes([s.pk]),
            "a cancel's matching turns": lambda s, u: turn_queries.cancellable_turns(
                s.pk, only_active=False, client_id=None, turn_id=None
            ),
        }
        for name, read in reads.items():
            row = [median_us(functools.partial(read, s, u), args.calls) for s, u in sessions.values()]
            print(f"{name:<32}" + "".join(f"{value:>22.1f}" for value in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
