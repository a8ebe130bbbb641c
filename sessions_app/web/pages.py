"""Browser pages (templates under templates/sessions_app/, overridable by the site).

The views stay thin: they pick a template and hand it what a selector or service returns.
Everything live happens in the page's JavaScript (static/chat/), over the protocol.
"""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import views as staticfiles_views
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import ensure_csrf_cookie

from sessions_app.errors import Forbidden, NotFound
from sessions_app.sessions import selectors
from sessions_app.sessions.services import require_member


@login_required
@ensure_csrf_cookie
def home(request: HttpRequest) -> HttpResponse:
    """The user's sessions (the page's script manages them over the API)."""
    sessions = selectors.sessions_for_user(user=request.user)  # type: ignore[arg-type]
    return render(request, "sessions_app/home.html", {"sessions": sessions})


@login_required
@ensure_csrf_cookie
@never_cache
def chat(request: HttpRequest, session_id: str) -> HttpResponse:
    """One session's chat page; a non-member gets the same 404 as a missing session."""
    try:
        session = require_member(session_id=session_id, user=request.user)  # type: ignore[arg-type]
    except (NotFound, Forbidden) as exc:
        raise Http404("no such session") from exc
    return render(request, "sessions_app/chat.html", {"session": session})


def static_file(request: HttpRequest, path: str) -> HttpResponse | FileResponse:
    """Serve static/ through the staticfiles finders, so that Daphne alone serves the pages'
    scripts and styles (docs/decisions/020-browser-page.md). A site with a
    front proxy or WhiteNoise serves STATIC_ROOT instead and never routes here."""
    return staticfiles_views.serve(request, path, insecure=True)


class LoginPage(auth_views.LoginView):
    template_name = "sessions_app/login.html"
    redirect_authenticated_user = True


class LogoutPage(auth_views.LogoutView):
    pass
