"""Interpreter settings for the long-running processes (Daphne and the Celery worker), where
a pause of the process is a pause of every stream it serves. Decision 013.

- GIL switch interval: each process runs an event loop beside ORM threads; a thread the
  GIL keeps waiting holds up a websocket frame or a token for up to the interval (Python's
  default is 5 ms).
- Garbage collector: a full collection walks every tracked object, and after start-up a
  process holds hundreds of thousands (Django, Twisted, Celery, the SDKs): 90-130 ms pauses,
  measured in both processes under load. Objects alive once the process is ready are moved
  to the permanent generation (`gc.freeze()`), so full collections only walk what came
  after: the connections, turns and events of the moment.
"""

from __future__ import annotations

import gc
import sys

from sessions_app.conf import app_settings


def tune_interpreter() -> None:
    """At app start-up (AppConfig.ready), in every process."""
    interval = app_settings.THREAD_SWITCH_INTERVAL_MS
    if interval:
        sys.setswitchinterval(interval / 1000)


def freeze_start_up_objects() -> None:
    """Once a server process is ready to serve (the ASGI application is built; the Celery
    worker is ready): keep what exists now out of every later collection."""
    if app_settings.GC_FREEZE_AT_START:
        gc.collect()  # what is garbage already need not be kept forever
        gc.freeze()
