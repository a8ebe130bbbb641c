"""Settings shared by every environment. Configuration comes from the environment (12-factor).

See `.env.example` for every variable and docs/deployment.md for what they do.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(str(BASE_DIR / ".env"))

SECRET_KEY = env("SECRET_KEY", default="insecure-dev-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "ninja",  # the API docs page's templates and static files (/api/docs)
    "knox",  # API tokens: stored hashed, one per login, with a lifetime (docs/security.md)
    "axes",  # login throttling: failed logins per username and per address
    "sessions_app",
]

# Django's standard middleware, with hooks that run on the event loop instead of hopping
# to the process's one sync thread twice per middleware per request (decision 024).
MIDDLEWARE = [
    "sessions_app.web.middleware.SecurityMiddleware",
    "sessions_app.web.middleware.SessionMiddleware",
    "sessions_app.web.middleware.CommonMiddleware",
    "sessions_app.web.middleware.CsrfViewMiddleware",
    "sessions_app.web.middleware.AuthenticationMiddleware",
    "sessions_app.web.middleware.MessageMiddleware",
    "sessions_app.web.middleware.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into a 429 answer.
    "axes.middleware.AxesMiddleware",
]

# django-axes checks every authenticate() call (the login page, POST /api/auth/token, the
# admin) before the model backend runs.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_env(default_sqlite: Path) -> dict[str, Any]:
    """PostgreSQL (or anything else) from DATABASE_URL; SQLite in WAL mode otherwise.

    SQLite runs with IMMEDIATE transactions so that concurrent writers (Daphne and the
    Celery worker) queue on the lock instead of failing with "database is locked", through
    a backend that makes them queue on a file lock rather than sleep and retry (decision 011).
    """
    config: dict[str, Any] = env.db("DATABASE_URL", default=f"sqlite:///{default_sqlite}")
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["ENGINE"] = "config.sqlite_backend"
        config.setdefault("OPTIONS", {}).update(
            {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    # Persistent connections for the fixed thread sets that do the hot-path work (websocket
    # commands, the worker's engine). HTTP requests, which ASGI runs in a thread each, close
    # theirs when they finish (sessions_app/apps.py).
    config["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    config["CONN_HEALTH_CHECKS"] = True
    return config


DATABASES = {"default": database_from_env(BASE_DIR / "db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# Redis carries the channel layer, the Celery broker, cancel signals and the live event log.
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Prefix for every Redis key and channel this deployment uses, so that several deployments
# (or test runs) can share one Redis server.
KEY_PREFIX = env("CHAT_KEY_PREFIX", default="chat")


def redis_settings(redis_url: str, key_prefix: str) -> dict[str, Any]:
    """The settings that follow from the Redis URL and the deployment's key prefix (the
    test and benchmark settings pick their own of both)."""
    return {
        "CHANNEL_LAYERS": {
            "default": {
                "BACKEND": env("CHANNEL_LAYER_BACKEND", default="channels_redis.pubsub.RedisPubSubChannelLayer"),
                "CONFIG": {"hosts": [redis_url], "prefix": f"{key_prefix}:layer:"},
            }
        },
        "CELERY_BROKER_URL": env("CELERY_BROKER_URL", default=redis_url),
        "CELERY_TASK_DEFAULT_QUEUE": f"{key_prefix}.turns",
    }


# CHANNEL_LAYERS, CELERY_BROKER_URL and CELERY_TASK_DEFAULT_QUEUE, from the URL and prefix.
globals().update(redis_settings(REDIS_URL, KEY_PREFIX))
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Turns are acknowledged when a worker takes them: a turn whose worker dies is ended with
# `worker_lost` by the reaper, never run a second time.
CELERY_TASK_ACKS_LATE = False

# DRF is kept for django-rest-knox, whose token model the API uses; the API itself is
# Django Ninja (sessions_app/web/api/, decision 024).

# API tokens (POST /api/auth/token): each login gets its own token, stored as a hash, valid
# for API_TOKEN_TTL_HOURS; logout, a password change and POST /api/auth/token/revoke end them.
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=env.float("API_TOKEN_TTL_HOURS", default=7 * 24)),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}

# Login throttling (django-axes): LOGIN_FAILURE_LIMIT failed logins lock that username out,
# and separately that address, for LOGIN_COOLOFF_MINUTES (429 rate_limited). A success
# clears the counts of its username and address. Behind a proxy, run Daphne with
# --proxy-headers so that the client's address, not the proxy's, is counted.
AXES_ENABLED = env.bool("LOGIN_THROTTLING", default=True)
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "sessions_app.web.throttling.lockout_response"
AXES_DISABLE_ACCESS_LOG = True  # failures are recorded; successes need no table of their own
AXES_VERBOSE = False

# The app's own settings, one namespace; see sessions_app/conf.py for every key and default.
SESSIONS_APP: dict[str, Any] = {
    "COALESCE_WINDOW_MS": env.float("CHAT_COALESCE_WINDOW_MS", default=40.0),
    "CANCEL_AUTHORISER": env(
        "CHAT_CANCEL_AUTHORISER",
        default="sessions_app.cancellation.authorisers.allow_any_member",
    ),
    "ON_ABORT": env("CHAT_ON_ABORT", default="") or None,
    "QUEUE_LIMIT": env.int("CHAT_QUEUE_LIMIT", default=10),
    # Agents (docs/agents.md): JSON of a list of agents, or "example" (the researcher, critic
    # and panel of sessions_app/agents/example.py); none by default (local.py: the example).
    "AGENTS": env("CHAT_AGENTS", default=""),
    # Turns active at once in one session; beyond it a send queues (or "reject": rate_limited).
    "MAX_ACTIVE_TURNS": env.int("CHAT_MAX_ACTIVE_TURNS", default=16),
    "ACTIVE_TURNS_OVERFLOW": env("CHAT_ACTIVE_TURNS_OVERFLOW", default="queue"),
    # Websocket limits (docs/security.md); 0 switches one off.
    "MAX_CONNECTIONS_PER_USER": env.int("CHAT_MAX_CONNECTIONS_PER_USER", default=64),
    "FRAMES_PER_MINUTE": env.int("CHAT_FRAMES_PER_MINUTE", default=1200),
    "MAX_OUTBOX_BYTES": env.int("CHAT_MAX_OUTBOX_BYTES", default=8 * 1024 * 1024),
    # Sends (messages that start turns) one user may make a minute, over HTTP and websockets.
    "SENDS_PER_MINUTE": env.int("CHAT_SENDS_PER_MINUTE", default=600),
    # `?token=` on the websocket URL (credentials in URLs end up in access logs): on here
    # for compatibility, off in the production settings unless CHAT_ALLOW_QUERY_TOKEN.
    "ALLOW_QUERY_TOKEN": env.bool("CHAT_ALLOW_QUERY_TOKEN", default=True),
}

# Ably (docs/ably.md): every session mirrored on an Ably channel by `manage.py ably_mirror`,
# off unless ABLY_API_KEY is set. Host, port and TLS point the SDK at another server.
ABLY_API_KEY = env("ABLY_API_KEY", default="")
ABLY_REST_HOST = env("ABLY_REST_HOST", default="") or None
ABLY_REALTIME_HOST = env("ABLY_REALTIME_HOST", default="") or None
ABLY_PORT = env.int("ABLY_PORT", default=0)
ABLY_TLS = env.bool("ABLY_TLS", default=True)
ABLY_CHANNEL_PREFIX = env("ABLY_CHANNEL_PREFIX", default="chat:")
ABLY_APPEND_INTERVAL_MS = env.float("ABLY_APPEND_INTERVAL_MS", default=100.0)
ABLY_TIMEOUT = env.float("ABLY_TIMEOUT", default=10.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}
