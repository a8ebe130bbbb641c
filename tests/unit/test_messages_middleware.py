"""Django's messages through the project's middleware (web/middleware.py), which makes a
request's message storage only when something uses it: a message added on one page shows
on the next, a request that never looks at messages keeps the ones waiting, and such a
request costs no storage at all."""

from __future__ import annotations

import pytest
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.test import Client
from django.urls import path
from django.utils.functional import empty


def add(request: HttpRequest) -> HttpResponse:
    messages.success(request, "saved")
    return HttpResponseRedirect("/show")


def show(request: HttpRequest) -> HttpResponse:
    return HttpResponse(",".join(str(m) for m in messages.get_messages(request)))


def elsewhere(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no messages here")


urlpatterns = [path("add", add), path("show", show), path("elsewhere", elsewhere)]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


def test_a_message_added_on_one_request_shows_on_the_next_once() -> None:
    client = Client()
    client.get("/add")

    assert client.get("/show").content == b"saved"
    assert client.get("/show").content == b""


def test_a_request_that_never_uses_messages_keeps_the_waiting_ones_and_builds_no_storage() -> None:
    client = Client()
    client.get("/add")

    response = client.get("/elsewhere")

    assert response.wsgi_request._messages._wrapped is empty  # type: ignore[attr-defined]
    assert client.get("/show").content == b"saved"
