"""Prometheus metrics of the web and worker processes (prometheus_client).

Two scrape models (docs/deployment.md, "Metrics"):

- **One scrape per host** (recommended): set PROMETHEUS_MULTIPROC_DIR to an empty directory
  shared by every web and worker process of the host, before they start. Each process
  writes its samples there; `/metrics` of any web process on the host answers the sum over
  all of them (workers included). Gauges count living processes only: files of processes
  that died are dropped at the next scrape.
- **One scrape per process**: without PROMETHEUS_MULTIPROC_DIR, `/metrics` of a web process
  answers that process's samples; a worker process serves its own on
  CHAT_WORKER_METRICS_PORT (nothing when unset).

Whole-deployment figures (turns active and queued, workers heartbeating) are read from the
database and Redis at scrape time, so they are right whichever process answers.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

TURNS_STREAMING = Gauge(
    "chat_turns_streaming", "Turns the worker processes are streaming now.", multiprocess_mode="livesum"
)
TOKENS = Counter("chat_tokens", "Tokens the workers streamed to devices (text chunks from the model).")
TURNS_ENDED = Counter("chat_turns_ended", "Turns ended by a worker, by reason.", ["reason"])
SEND_SECONDS = Histogram(
    "chat_send_seconds",
    "From a send reaching a web process to its acknowledgement (websocket and HTTP).",
    buckets=_LATENCY_BUCKETS,
)
CANCEL_SECONDS = Histogram(
    "chat_cancel_seconds",
    "From a cancel's commit to the end of the active turn it stopped (hosts' clocks apart).",
    buckets=_LATENCY_BUCKETS,
)
HANDOVERS = Counter(
    "chat_turn_sets_handed_over",
    "Sets of started turns handed to the workers, by way: to a worker waiting for work, as a "
    "Celery task (no worker was waiting: all full, or none running), or kept by the worker "
    "whose turn's end started them (queued turns).",
    ["way"],
)
WEBSOCKETS = Gauge("chat_websocket_connections", "Open websocket connections.", multiprocess_mode="livesum")
HEARTBEATS = Counter("chat_worker_heartbeats", "Heartbeats written by worker processes.")
ERRORS = Counter(
    "chat_errors",
    "Errors answered, by where (http, websocket, turn) and the protocol's code.",
    ["edge", "code"],
)


class DeploymentCollector(Collector):
    """Figures of the whole deployment, read when scraped: turns active and queued (the
    database), worker processes heartbeating (Redis)."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families, without reading anything (the registry asks when it registers)."""
        yield GaugeMetricFamily("chat_turns", "Turns in flight in the deployment, by status.", labels=["status"])
        yield GaugeMetricFamily("chat_workers_alive", "Worker processes whose heartbeat is recent.")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db import close_old_connections
        from django.db.models import Count

        from sessions_app.conf import app_settings
        from sessions_app.infra import live_state
        from sessions_app.models import Turn, TurnStatus

        turns = GaugeMetricFamily("chat_turns", "Turns in flight in the deployment, by status.", labels=["status"])
        try:
            close_old_connections()
            counts = dict(
                Turn.objects.filter(status__in=[TurnStatus.ACTIVE, TurnStatus.QUEUED])
                .values_list("status")
                .annotate(n=Count("pk"))
                .values_list("status", "n")
            )
            for status in (TurnStatus.ACTIVE, TurnStatus.QUEUED):
                turns.add_metric([str(status)], counts.get(status, 0))
            yield turns
        except Exception as exc:
            logger.warning("metrics: counting turns failed: %s", exc)
        workers = GaugeMetricFamily("chat_workers_alive", "Worker processes whose heartbeat is recent.")
        try:
            cutoff = time.time() - float(app_settings.WORKER_LOST_AFTER_SECONDS)
            workers.add_metric([], int(live_state.sync_redis().zcount(live_state.Keys.workers(), cutoff, "+inf")))  # type: ignore[arg-type]
            yield workers
        except Exception as exc:
            logger.warning("metrics: counting workers failed: %s", exc)


_deployment = DeploymentCollector()
if not MULTIPROCESS:
    REGISTRY.register(_deployment)

_PID_FILE = re.compile(r"_(\d+)\.db$")


def _forget_dead_processes(directory: Path) -> None:
    """Drop the live gauges of processes of this host that died (nothing else would)."""
    from prometheus_client import multiprocess

    for path in directory.glob("gauge_live*_*.db"):
        match = _PID_FILE.search(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))
        except PermissionError:
            pass  # alive, under another user


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (sync: reads files and the database)."""
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        _forget_dead_processes(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_deployment)
        return _generate_latest(registry), CONTENT_TYPE_LATEST
    return _generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def serve_worker_metrics() -> None:
    """In a worker process without PROMETHEUS_MULTIPROC_DIR: serve its own metrics on
    CHAT_WORKER_METRICS_PORT, if set."""
    port = os.environ.get("CHAT_WORKER_METRICS_PORT")
    if MULTIPROCESS or not port:
        return
    from prometheus_client import start_http_server

    start_http_server(int(port), addr=os.environ.get("CHAT_WORKER_METRICS_ADDR", "127.0.0.1"))


async def view(request: Any) -> Any:
    """`GET /metrics`: the exposition text (read on a database thread: it queries)."""
    from django.http import HttpResponse

    from sessions_app.infra.db_threads import db

    body, content_type = await db(render)()
    return HttpResponse(body, content_type=content_type)
