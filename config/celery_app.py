"""The Celery application (`celery -A config worker`). Settings are read from Django's,
under the CELERY_ namespace. Without DJANGO_SETTINGS_MODULE the worker loads the production
settings, like manage.py and config/asgi.py."""

import os

from celery import Celery

# Whether the environment named the settings before this default applied: importing the
# `config` package runs this module first, so `make run`'s launcher (config/runstack.py)
# reads it to tell a choice of the operator from this default.
SETTINGS_GIVEN = "DJANGO_SETTINGS_MODULE" in os.environ
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sessions_app.worker"])  # sessions_app/worker/tasks.py
