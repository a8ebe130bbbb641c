"""The app's URLs; a site includes them (`path("", include("sessions_app.urls"))`)."""

from django.conf import settings
from django.urls import include, path, re_path

from sessions_app.web import pages, transcript

urlpatterns = [
    path("", include("sessions_app.web.api.urls")),
    path("", pages.home, name="home"),
    path("s/<str:session_id>/", pages.chat, name="chat"),
    path("sessions/<uuid:session_id>/transcript", transcript.transcript, name="transcript"),
    path("login/", pages.LoginPage.as_view(), name="login"),
    path("logout/", pages.LogoutPage.as_view(), name="logout"),
]

# Daphne serves no static files by itself (docs/decisions/020-browser-page.md).
if settings.STATIC_URL.startswith(("/static/", "static/")) and getattr(settings, "CHAT_SERVE_STATIC", True):
    urlpatterns.append(re_path(r"^static/(?P<path>.+)$", pages.static_file, name="chat-static"))
