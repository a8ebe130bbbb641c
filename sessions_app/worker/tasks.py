"""Celery tasks: thin, they load by id and hand over to the turn loop. Also the receiver
that hands turns made ready by the turns package to these tasks."""

from collections.abc import Sequence
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.dispatch import receiver

from sessions_app.infra.interpreter import freeze_start_up_objects
from sessions_app.turns.announce import turns_ready
from sessions_app.worker.turn_loop import engine


@shared_task(name="sessions_app.run_turns", ignore_result=True)
def run_turns(turn_pks: list[int]) -> None:
    """Stream turns that started together (a set of sends, often one turn); returns when
    all have ended."""
    engine().run_many(turn_pks)


@receiver(turns_ready, dispatch_uid="sessions_app.worker.run_turns")
def hand_to_workers(sender: Any, turn_pks: Sequence[int], **_kwargs: Any) -> None:
    """One task for all the turns a commit made ready (a Celery publish costs about half a
    millisecond of CPU; a burst of sends pays it once per set, not per turn)."""
    run_turns.delay(list(turn_pks))


@worker_ready.connect
def start_engine(**_kwargs: Any) -> None:
    """Start heartbeat, cancel listener and reaper as soon as the worker is up."""
    engine()
    freeze_start_up_objects()
