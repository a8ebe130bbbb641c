"""Site URLs. The app's URLs are included as a site deploying `sessions_app` would, with the
operators' endpoints (docs/deployment.md): liveness, readiness and Prometheus metrics."""

from django.contrib import admin
from django.urls import include, path

from sessions_app.ops import health, metrics

urlpatterns = [
    path("healthz", health.live, name="healthz"),
    path("readyz", health.ready, name="readyz"),
    path("metrics", metrics.view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("sessions_app.urls")),
]

# A server error answers JSON under /api/, and 503 `unavailable` while the database or
# Redis is away (sessions_app/ops/errors.py).
handler404 = "sessions_app.ops.errors.not_found"
handler500 = "sessions_app.ops.errors.server_error"
