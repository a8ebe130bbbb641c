"""Browser pages (templates under templates/sessions_app/, overridable by the site)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "sessions_app/home.html", {})


class LoginPage(auth_views.LoginView):
    template_name = "sessions_app/login.html"


class LogoutPage(auth_views.LogoutView):
    pass
