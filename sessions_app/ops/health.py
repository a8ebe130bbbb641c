"""Liveness and readiness for a load balancer or an orchestrator (docs/deployment.md).

- `GET /healthz` (liveness): the process answers; it touches neither the database nor Redis,
  so an outage of either never gets healthy processes restarted.
- `GET /readyz` (readiness): the database answers a query, Redis answers PING, and at least
  one worker process heartbeats (turns would otherwise wait). 200 with each check's result,
  or 503 with the protocol's error envelope (`unavailable`) and the checks that failed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.db import connection
from django.http import HttpRequest, JsonResponse

from sessions_app.conf import app_settings
from sessions_app.infra import live_state
from sessions_app.infra.db_threads import db

# Each check's bound: a load balancer's probe should not hang on a stalled dependency.
CHECK_TIMEOUT_SECONDS = 2.0


async def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _query_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _database() -> str:
    await db(_query_database)()
    return "ok"


async def _redis() -> str:
    await live_state.async_redis().ping()
    return "ok"


async def _workers() -> str:
    cutoff = time.time() - float(app_settings.WORKER_LOST_AFTER_SECONDS)
    alive = int(await live_state.async_redis().zcount(live_state.Keys.workers(), cutoff, "+inf"))
    if not alive:
        raise RuntimeError("no worker process heartbeats")
    return f"{alive} heartbeating"


async def _check(probe: Any) -> tuple[bool, str]:
    try:
        return True, await asyncio.wait_for(probe(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return False, str(exc) or type(exc).__name__


async def ready(request: HttpRequest) -> JsonResponse:
    names = ("database", "redis", "workers")
    results = await asyncio.gather(_check(_database), _check(_redis), _check(_workers))
    checks = {name: detail for name, (_, detail) in zip(names, results, strict=True)}
    failed = [name for name, (ok, _) in zip(names, results, strict=True) if not ok]
    if not failed:
        return JsonResponse({"status": "ready", "checks": checks})
    message = "not ready: " + ", ".join(f"{name} ({checks[name]})" for name in failed)
    response = JsonResponse(
        {"error": {"code": "unavailable", "message": message}, "status": "unavailable", "checks": checks}, status=503
    )
    response["Retry-After"] = "1"
    return response
