"""Hostile input over HTTP gets a documented 4xx, never a 500; API tokens expire and can be
revoked; logins are throttled (docs/security.md). Django's test client against the real
URLs and middleware, in process."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from sessions_app.models import ChatSession
from sessions_app.schemas import SessionCreateBody, SessionUpdateBody
from sessions_app.sessions.services import session_create

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-security-tests"


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user(username=f"sec-{uuid.uuid4().hex[:8]}", password=PASSWORD)


def login(client: Client, username: str, password: str = PASSWORD, addr: str = "10.0.0.1") -> Any:
    return client.post(
        "/api/auth/token",
        {"username": username, "password": password},
        content_type="application/json",
        REMOTE_ADDR=addr,
    )


def token_of(user: Any) -> str:
    answer = login(Client(), user.get_username())
    assert answer.status_code == 200, answer.content
    return str(answer.json()["token"])


def api(token: str) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def error_of(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# --- malformed and hostile bodies ------------------------------------------------------


def test_deeply_nested_json_is_invalid_on_every_json_endpoint(user):
    token = token_of(user)
    session = session_create(owner=user, title="t")
    deep = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
    medium = b'{"title":"x","modelOptions":' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}"
    calls = [
        (Client(), "post", "/api/auth/token", deep),
        (api(token), "post", "/api/sessions", deep),
        (api(token), "post", "/api/sessions", medium),
        (api(token), "patch", f"/api/sessions/{session.pk}", deep),
        (api(token), "post", f"/api/sessions/{session.pk}/turns", deep),
        (api(token), "post", f"/api/sessions/{session.pk}/cancel", deep),
        (api(token), "post", f"/api/sessions/{session.pk}/wait", deep),
    ]
    for client, method, path, body in calls:
        response = getattr(client, method)(path, body, content_type="application/json")
        assert error_of(response) == (400, "invalid"), (method, path)


@pytest.mark.parametrize(
    "options",
    [
        b'{"modelOptions": {"a": "\\ud800"}}',
        b'{"modelOptions": {"\\udfff": 1}}',
        b'{"modelOptions": {"a": 1e400}}',
        b'{"modelOptions": {"a": -1e400}}',
        b'{"modelOptions": {"a": NaN}}',
    ],
)
def test_model_options_that_cannot_round_trip_are_invalid(user, options):
    token = token_of(user)
    session = session_create(owner=user, title="t")
    created = api(token).post("/api/sessions", options, content_type="application/json")
    patched = api(token).patch(f"/api/sessions/{session.pk}", options, content_type="application/json")
    assert error_of(created) == (400, "invalid")
    assert error_of(patched) == (400, "invalid")
    assert api(token).get("/api/sessions").status_code == 200


@pytest.mark.parametrize(
    "options",
    [
        {"a": "\ud800"},
        {"\udfff": 1},
        {"a": float("inf")},
        {"a": float("nan")},
        {1: "not a string key"},
        {"deep": nested(40)},
        {"big": "x" * 100_000},
    ],
)
def test_the_session_schemas_refuse_model_options_that_are_not_plain_json(options):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SessionCreateBody.model_validate({"modelOptions": options})
    with pytest.raises(ValidationError):
        SessionUpdateBody.model_validate({"modelOptions": options})


def test_a_bad_value_already_stored_does_not_break_reads(user):
    """A lone surrogate stored before validation refused it (SQLite's JSON text holds one;
    PostgreSQL's jsonb never did) is read back as U+FFFD."""
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite stores a lone surrogate in JSON")
    token = token_of(user)
    session = session_create(owner=user, title="t")
    ChatSession.objects.filter(pk=session.pk).update(model_options={"a": "\ud800", "\udc00": 1})

    listed = api(token).get("/api/sessions")
    detail = api(token).get(f"/api/sessions/{session.pk}")

    assert listed.status_code == 200 and detail.status_code == 200
    assert detail.json()["modelOptions"] == {"a": "\ufffd", "\ufffd": 1}


def test_a_request_without_credentials_is_told_how_to_authenticate():
    answer = Client().get("/api/sessions")

    assert error_of(answer) == (401, "unauthenticated")
    assert "Authorization: Token <key>" in answer.json()["error"]["message"]
    assert answer["WWW-Authenticate"] == "Token"


def test_a_method_a_path_does_not_take_answers_the_envelope_with_the_allowed_ones(user):
    token = token_of(user)
    session = session_create(owner=user, title="t")

    for method, path, allowed in (
        ("delete", "/api/models", "GET, HEAD"),
        ("put", f"/api/sessions/{session.pk}/turns", "GET, HEAD, POST"),
        ("get", f"/api/sessions/{session.pk}/cancel/", "POST"),  # the trailing-slash twin too
    ):
        answer = getattr(api(token), method)(path)

        assert error_of(answer) == (405, "invalid"), (method, path)
        assert answer["Allow"] == allowed


# --- /wait from a browser ----------------------------------------------------------------


def test_a_browser_waits_with_its_session_cookie_and_csrf_token(user):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    session = session_create(owner=user, title="t")
    assert browser.get("/").status_code == 200  # sets the csrftoken cookie
    csrf = browser.cookies["csrftoken"].value
    path = f"/api/sessions/{session.pk}/wait"

    with_token = browser.post(path, {"timeout": 0}, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    without = browser.post(path, {"timeout": 0}, content_type="application/json")

    assert with_token.status_code == 200, with_token.content
    assert with_token.json() == {"turns": [], "timedOut": False}
    assert error_of(without) == (403, "forbidden")


# --- tokens: lifetime, revocation --------------------------------------------------------


def test_a_token_can_be_revoked_by_its_owner(user):
    first, second = token_of(user), token_of(user)

    revoked = api(first).post("/api/auth/token/revoke", {}, content_type="application/json")

    assert revoked.status_code == 200 and revoked.json() == {"revoked": 1}
    assert error_of(api(first).get("/api/sessions")) == (401, "unauthenticated")
    assert api(second).get("/api/sessions").status_code == 200  # another device's token
    everything = api(second).post("/api/auth/token/revoke", {"all": True}, content_type="application/json")
    assert everything.json() == {"revoked": 1}
    assert error_of(api(second).get("/api/sessions")) == (401, "unauthenticated")


def test_a_token_expires(user, settings):
    from knox.models import AuthToken

    token = token_of(user)
    assert api(token).get("/api/sessions").status_code == 200
    row = AuthToken.objects.get(user=user)
    row.expiry = timezone.now() - timedelta(seconds=1)  # as the admin would shorten it
    row.save()

    expired = api(token).get("/api/sessions")

    assert error_of(expired) == (401, "unauthenticated")
    assert "expired" in expired.json()["error"]["message"] or "invalid" in expired.json()["error"]["message"]


def test_the_token_lifetime_is_a_setting(user, settings):
    from knox.models import AuthToken

    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(minutes=5)}
    token_of(user)
    [row] = AuthToken.objects.filter(user=user)
    assert timedelta(minutes=4) < row.expiry - timezone.now() <= timedelta(minutes=5)


def test_logging_out_of_the_browser_revokes_the_users_tokens(user):
    token = token_of(user)
    browser = Client()
    browser.force_login(user)

    browser.post("/logout/")

    assert error_of(api(token).get("/api/sessions")) == (401, "unauthenticated")


def test_a_password_change_revokes_the_users_tokens(user):
    token = token_of(user)
    user.last_name = "renamed"
    user.save()  # any other change keeps them
    assert api(token).get("/api/sessions").status_code == 200

    user.set_password("a-new-password-123")
    user.save()

    assert error_of(api(token).get("/api/sessions")) == (401, "unauthenticated")


def test_a_websocket_ticket_needs_authentication(user):
    assert error_of(Client().post("/api/auth/ws-ticket"))[0] == 401
    ticket = api(token_of(user)).post("/api/auth/ws-ticket")
    assert ticket.status_code == 200 and len(ticket.json()["ticket"]) >= 32 and ticket.json()["expiresIn"] > 0


# --- login throttling --------------------------------------------------------------------


def test_failed_logins_lock_the_username_out_for_a_while(user, settings):
    limit = settings.AXES_FAILURE_LIMIT
    answers = [error_of(login(Client(), user.get_username(), "wrong", addr=f"10.1.0.{n}")) for n in range(limit)]
    assert answers[:-1] == [(401, "unauthenticated")] * (limit - 1)
    assert answers[-1] == (429, "rate_limited")  # the failure that reaches the limit locks

    locked = login(Client(), user.get_username(), PASSWORD, addr="10.2.0.1")  # right password, other address

    assert error_of(locked) == (429, "rate_limited")
    assert int(locked["Retry-After"]) > 0


def test_failed_logins_from_one_address_lock_that_address_out(user, settings):
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        login(Client(), f"nobody-{attempt}", "wrong", addr="10.3.0.1")

    assert error_of(login(Client(), user.get_username(), PASSWORD, addr="10.3.0.1")) == (429, "rate_limited")
    assert login(Client(), user.get_username(), PASSWORD, addr="10.3.0.2").status_code == 200


def test_the_login_page_is_throttled_too(user, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        page = Client().post("/login/", {"username": user.get_username(), "password": "wrong"}, REMOTE_ADDR="10.4.0.1")
        assert page.status_code == 200  # the form again, with its error
    assert Client().post("/login/", {"username": user.get_username(), "password": "x"}).status_code == 429

    locked = Client().post("/login/", {"username": user.get_username(), "password": PASSWORD}, REMOTE_ADDR="10.4.0.2")

    assert locked.status_code == 429


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary="])
def test_a_login_whatever_its_content_type_says_counts_towards_the_limit(user, settings, content_type):
    """A JSON body sent as a form with no boundary: once a 500 that the throttle never
    recorded, so that passwords could be guessed at any rate."""

    def attempt(password: str) -> Any:
        body = f'{{"username": "{user.get_username()}", "password": "{password}"}}'
        return Client().post("/api/auth/token", body, content_type=content_type, REMOTE_ADDR="10.5.0.1")

    answers = [error_of(attempt("wrong")) for _ in range(settings.AXES_FAILURE_LIMIT)]

    assert answers[:-1] == [(401, "unauthenticated")] * (settings.AXES_FAILURE_LIMIT - 1)
    assert answers[-1] == (429, "rate_limited")
    assert error_of(attempt(PASSWORD)) == (429, "rate_limited")
