"""Celery tasks: thin, they load by id and hand over to the turn loop. Also the receiver
that hands turns made ready by the turns package to the workers: to a worker waiting for
work if one is, else as a Celery task (decision 027)."""

from collections.abc import Sequence
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.dispatch import receiver

from sessions_app.infra.interpreter import freeze_start_up_objects
from sessions_app.infra.live_state import offer_turns_sync
from sessions_app.ops import metrics
from sessions_app.turns.announce import turns_ready
from sessions_app.worker.turn_loop import engine


@shared_task(name="sessions_app.run_turns", ignore_result=True)
def run_turns(turn_pks: list[int]) -> None:
    """Stream turns that started together (a set of sends, often one turn); returns when
    all have ended."""
    engine().run_many(turn_pks)


@receiver(turns_ready, dispatch_uid="sessions_app.worker.run_turns")
def hand_to_workers(sender: Any, turn_pks: Sequence[int], **_kwargs: Any) -> None:
    """Hand the turns a commit made ready to a worker waiting for work, in one Redis round
    trip; if none is waiting (each is streaming as many sets as its pool has threads, or
    none runs), publish one Celery task for them, which a pool thread takes when one is
    free. A Celery publish costs this process 0.6 to 2 ms of CPU and reaches the worker
    ~1 ms later: on an idle deployment it was a third of a first token's time. A burst of
    sends pays the hand-over once per set, not per turn."""
    pks = list(turn_pks)
    if offer_turns_sync(pks):
        metrics.HANDOVERS.labels("waiting_worker").inc()
    else:
        run_turns.delay(pks)
        metrics.HANDOVERS.labels("celery_task").inc()


@worker_ready.connect
def start_engine(sender: Any = None, **_kwargs: Any) -> None:
    """Start heartbeat, cancel listener and reaper as soon as the worker is up, and wait
    for offered turns while fewer sets stream here than the pool has threads."""
    pool_size = getattr(getattr(sender, "controller", None), "concurrency", None)
    engine().take_offers(int(pool_size) if pool_size else 1)
    freeze_start_up_objects()
