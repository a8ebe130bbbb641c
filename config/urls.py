"""Site URLs. The app's URLs are included as a site deploying `sessions_app` would."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("sessions_app.urls")),
]
