"""Settings for `make run` and local development: debug on, SQLite unless DATABASE_URL."""

from config.settings.base import *  # noqa: F403
from config.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
