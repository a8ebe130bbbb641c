"""A site's urlconf without the API (tests/unit/test_http_entry.py)."""

from django.urls import path

from sessions_app.ops import health

urlpatterns = [path("healthz", health.live)]

handler404 = "sessions_app.ops.errors.not_found"
