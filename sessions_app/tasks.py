"""Celery tasks: thin, they load by id and hand over to the engine."""

from typing import Any

from celery import shared_task
from celery.signals import worker_ready

from sessions_app.engine import engine
from sessions_app.runtime import freeze_start_up_objects


@shared_task(name="sessions_app.run_turn", ignore_result=True)
def run_turn(turn_pk: int) -> None:
    """Stream one turn; returns when it has ended."""
    engine().run(turn_pk)


@worker_ready.connect
def start_engine(**_kwargs: Any) -> None:
    """Start heartbeat, cancel listener and reaper as soon as the worker is up."""
    engine()
    freeze_start_up_objects()
