"""Celery tasks: thin, they load by id and hand over to the engine."""

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from sessions_app.infra.interpreter import freeze_start_up_objects
from sessions_app.worker.turn_loop import engine


@shared_task(name="sessions_app.run_turn", ignore_result=True)
def run_turn(turn_pk: int) -> None:
    """Stream one turn; returns when it has ended. Nothing sends this task any more
    (`run_turns` carries one turn or many); it stays so that tasks queued by an earlier
    version still run after an upgrade."""
    engine().run_many([turn_pk])


@shared_task(name="sessions_app.run_turns", ignore_result=True)
def run_turns(turn_pks: list[int]) -> None:
    """Stream turns that started together (a set of sends, often one turn); returns when
    all have ended."""
    engine().run_many(turn_pks)


@worker_ready.connect
def start_engine(**_kwargs: Any) -> None:
    """Start heartbeat, cancel listener and reaper as soon as the worker is up."""
    engine()
    freeze_start_up_objects()
