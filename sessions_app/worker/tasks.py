"""Celery tasks: thin, they load by id and hand over to the turn loop. Also the receiver
that hands turns made ready by the turns package to the workers: to a worker waiting for
work if one is, else as a Celery task (decision 027)."""

import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import shared_task
from celery.signals import worker_ready
from django.dispatch import receiver

from sessions_app.infra.interpreter import freeze_start_up_objects
from sessions_app.infra.live_state import offer_turns_sync
from sessions_app.ops import metrics
from sessions_app.turns.announce import turns_ready
from sessions_app.worker.turn_loop import engine, started_engine

logger = logging.getLogger(__name__)


@shared_task(name="sessions_app.run_turns", ignore_result=True)
def run_turns(turn_pks: list[int]) -> None:
    """Stream turns that started together (a set of sends, often one turn); returns when
    all have ended."""
    engine().run_many(turn_pks)


@receiver(turns_ready, dispatch_uid="sessions_app.worker.run_turns")
def hand_to_workers(sender: Any, turn_pks: Sequence[int], **_kwargs: Any) -> None:
    """Hand the turns a commit made ready to the workers. A worker's own commit (a queued
    turn starts as one of its turns ends) runs them itself while it has room. Otherwise to
    a worker waiting for work if one is, in one Redis round trip; if none is waiting (each
    is streaming as many sets as its pool has threads, or none runs), as one Celery task,
    which a pool thread takes when one is free. A Celery publish costs this process 0.6 to
    2 ms of CPU and reaches the worker ~1 ms later: on an idle deployment it was a third
    of a first token's time. A burst of sends pays the hand-over once per set, not per
    turn (decision 027)."""
    pks = list(turn_pks)
    here = started_engine()
    if here is not None and here.run_here(pks):
        metrics.HANDOVERS.labels("same_worker").inc()
    elif offer_turns_sync(pks):
        metrics.HANDOVERS.labels("waiting_worker").inc()
    else:
        run_turns.delay(pks)
        metrics.HANDOVERS.labels("celery_task").inc()


def prepare_hand_over() -> threading.Thread:
    """At a web process's start-up, what its first Celery hand-over would otherwise do on a
    database thread, in the work after some send's commit: 40-60 ms on a small VM, where a
    later hand-over takes ~1 ms. Celery finalizes its app and builds its result backend
    (disabled here, but found by reading every installed package's entry points), its
    router, its message sender and its producer pool, here; a producer opens the broker
    connection and declares the queue on a thread of its own (returned), so that start-up
    never waits on the network. A broker out of reach then is left for the first hand-over
    to connect to, as before."""
    app = run_turns.app
    app.finalize(auto=True)
    app.backend  # noqa: B018
    app.amqp.send_task_message  # noqa: B018  (the sender, built once: it imports Celery's events)
    connecting = threading.Thread(target=_open_broker_connection, name="prepare-hand-over", daemon=True)
    connecting.start()
    return connecting


def _open_broker_connection() -> None:
    app = run_turns.app
    try:
        with app.producer_or_acquire() as producer:
            producer.connection.ensure_connection(max_retries=0)
            producer.maybe_declare(app.amqp.queues[app.conf.task_default_queue])
    except Exception as exc:  # kombu's and redis-py's connection errors alike
        logger.info("the broker is not reachable yet (%s): the first hand-over will connect", exc)


@worker_ready.connect
def start_engine(sender: Any = None, **_kwargs: Any) -> None:
    """Start heartbeat, cancel listener and reaper as soon as the worker is up, and wait
    for offered turns while fewer sets stream here than the pool has threads."""
    pool_size = getattr(getattr(sender, "controller", None), "concurrency", None)
    engine().take_offers(int(pool_size) if pool_size else 1)
    freeze_start_up_objects()
