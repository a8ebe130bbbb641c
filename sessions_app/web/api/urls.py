from django.urls import re_path

from sessions_app.web.api import views

S = r"^api/sessions/(?P<session_id>[^/]+)"

urlpatterns = [
    re_path(r"^api/auth/token/?$", views.TokenView.as_view(), name="api-token"),
    re_path(r"^api/models/?$", views.ModelsView.as_view(), name="api-models"),
    re_path(r"^api/sessions/?$", views.SessionsView.as_view(), name="api-sessions"),
    re_path(S + r"/?$", views.SessionView.as_view(), name="api-session"),
    re_path(S + r"/members/?$", views.MembersView.as_view(), name="api-members"),
    re_path(S + r"/turns/?$", views.TurnsView.as_view(), name="api-turns"),
    re_path(S + r"/turns/(?P<turn_id>[^/]+)/?$", views.TurnView.as_view(), name="api-turn"),
    re_path(S + r"/cancel/?$", views.CancelView.as_view(), name="api-cancel"),
    re_path(S + r"/wait/?$", views.wait_view, name="api-wait"),
    re_path(S + r"/messages/?$", views.MessagesView.as_view(), name="api-messages"),
    re_path(S + r"/events/?$", views.EventsView.as_view(), name="api-events"),
]
