"""The Celery application (`celery -A config worker`). Settings are read from Django's,
under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["sessions_app.worker"])  # sessions_app/worker/tasks.py
