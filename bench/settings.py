"""Settings of the benchmark stack: the production-like base settings, against the database
and Redis the harness gives (DATABASE_URL, REDIS_URL, CHAT_KEY_PREFIX).

One change from the defaults, so that the load is not refused: the per-user send rate limit
(SENDS_PER_MINUTE, 600 by default) is a million a minute, as the harness sends thousands of
turns a minute as a handful of users. It stays on, so that every send is counted as in a
deployment (in blocks of 30, as with the default limit: decision 030).
"""

import os

from config.settings.base import *  # noqa: F403
from config.settings.base import SESSIONS_APP, redis_settings

REDIS_URL = os.environ["REDIS_URL"]
KEY_PREFIX = os.environ["CHAT_KEY_PREFIX"]
# CHANNEL_LAYERS, CELERY_BROKER_URL and CELERY_TASK_DEFAULT_QUEUE, from the URL and prefix.
globals().update(redis_settings(REDIS_URL, KEY_PREFIX))
# The harness also holds hundreds of websockets as one user and sends bursts of frames on
# them: the per-user connection and per-connection frame limits are off too.
SESSIONS_APP = {**SESSIONS_APP, "SENDS_PER_MINUTE": 1_000_000, "MAX_CONNECTIONS_PER_USER": 0, "FRAMES_PER_MINUTE": 0}
