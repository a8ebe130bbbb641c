"""Browser sessions a web process has already checked: a request with a known session
cookie costs what a known API token costs, no database query and, while the credentials
watch vouches, no Redis read (decision 049).

Django's `get_user` reads the session row and the user row, on a database thread, on every
request (~1.2 ms of a trivial GET's 2). A session it accepted is remembered with its user,
its row's expiry and the credentials generation read before the check (web/token_cache.py),
and trusted only while the generation is the same, its expiry has not passed and
KNOWN_SECONDS have not; anything else is checked by `get_user` again (its password hash
check, its flush of a session that fails it, included).

Every change that can turn a browser session away renews the generation as it commits, so
every process forgets before the change answers: a logged-in session's row deleted (a
logout flushes it; the admin or a shell deletes it) or saved with another user, backend or
password hash, or a sooner expiry; a user saved or deleted (token_cache: deactivated, password
changed: the session's hash no longer matches). A logout also revokes the user's tokens,
which renews it too (web/tokens.py). A new session, an expired one deleted
(`clearsessions`), or a save that changes none of these (a login's, which fills a new,
anonymous row) changes nothing remembered and renews nothing. A change made without model
signals (a queryset `update()`) shows within KNOWN_SECONDS.

Only sessions kept in the database (the `db` engine, which the settings use, and
`cached_db`) are remembered: their changes come with model signals. Under another engine
every request is checked, as before.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db.models.signals import post_delete, post_save, pre_save
from django.http import HttpRequest
from django.utils import timezone

from sessions_app.infra.db_threads import db
from sessions_app.web import token_cache

KNOWN_SECONDS = token_cache.KNOWN_SECONDS
KNOWN_LIMIT = token_cache.KNOWN_LIMIT  # sessions remembered per process; the oldest go first
LOGIN_KEYS = (SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY)  # what get_user reads of a session


@dataclass(frozen=True, slots=True)
class _Known:
    user: AbstractBaseUser
    expiry: datetime  # the session row's expire_date
    generation: bytes
    until: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Checked:
    user: AbstractBaseUser
    expiry: datetime | None  # None: not to be remembered (another engine, a new key, the row gone)


_known: dict[str, _Known] = {}  # by the SHA-256 of the session key: the keys are not kept


async def user_for_session(request: HttpRequest, key: str) -> AbstractBaseUser | None:
    """The user the request's browser session (`key`, its session cookie) is logged in as,
    as `django.contrib.auth.get_user` decides it; None if nobody. Remembered while no
    credential has changed since the check."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    generation = await token_cache.current_generation()
    known = _known.get(digest)
    if known is not None and generation is not None and known.generation == generation:
        if known.until > time.monotonic() and known.expiry > timezone.now():
            request.session.accessed = True  # the answer still varies with the cookie, as when it is read
            return known.user
    checked = await db(_check)(request, key)
    if checked is None:
        _known.pop(digest, None)
        return None
    if generation is not None and checked.expiry is not None:
        _remember(digest, _Known(checked.user, checked.expiry, generation, time.monotonic() + KNOWN_SECONDS))
    return checked.user


def _check(request: HttpRequest, key: str) -> _Checked | None:
    """Django's check (the session, its user, the password hash), then the row's expiry:
    Django's store keeps a row's data, not its expiry, so it takes one more query, on a
    check only. A session that `get_user` changed (a new key for an old SECRET_KEY's hash)
    is not remembered: its browser gets the new key."""
    user = get_user(request)  # type: ignore[arg-type]
    if not isinstance(user, AbstractBaseUser):
        return None  # AnonymousUser
    session, model = request.session, session_model()
    if model is None or session.session_key != key or session.modified:
        return _Checked(user, None)
    expiry = (
        model._default_manager.filter(session_key=key, expire_date__gt=timezone.now())
        .values_list("expire_date", flat=True)
        .first()
    )
    return _Checked(user, expiry)


def _remember(digest: str, known: _Known) -> None:
    if len(_known) >= KNOWN_LIMIT and digest not in _known:
        _known.pop(next(iter(_known)))
    _known[digest] = known


def session_model() -> type[AbstractBaseSession] | None:
    """The model that holds the sessions, where the session engine keeps them in the
    database (its changes then come with model signals); None otherwise."""
    store = _database_store(settings.SESSION_ENGINE)
    return None if store is None else store.get_model_class()


@cache
def _database_store(engine: str) -> type[DatabaseSessionStore] | None:
    store = import_module(engine).SessionStore
    return store if issubclass(store, DatabaseSessionStore) else None


# --- what changes browser sessions ---------------------------------------------------------


def _login_in(data: str) -> tuple[Any, ...] | None:
    """Who a session row's data is logged in as (what get_user reads of it), if anyone."""
    store = _database_store(settings.SESSION_ENGINE)
    decoded = {} if store is None else store().decode(data)
    return tuple(decoded.get(name) for name in LOGIN_KEYS) if SESSION_KEY in decoded else None


def _note_before_save(sender: type[AbstractBaseSession], instance: AbstractBaseSession, **kwargs: Any) -> None:
    """Before a session row is saved: whether the save can turn away a browser that a process
    may remember (one read): the row was logged in and unexpired, and now names another
    login or expires sooner. The change is announced after the save, as it commits."""
    row = sender._default_manager.filter(pk=instance.pk).values_list("session_data", "expire_date").first()
    turns_away = False  # a new row, or an expired one: no process trusts it
    if row is not None and row[1] > timezone.now():
        before = _login_in(row[0])
        turns_away = before is not None and (
            instance.expire_date < row[1] or _login_in(instance.session_data) != before
        )
    instance._chat_turns_away = turns_away  # type: ignore[attr-defined]


def _saved(sender: Any, instance: AbstractBaseSession, **kwargs: Any) -> None:
    if getattr(instance, "_chat_turns_away", False):
        instance._chat_turns_away = False  # type: ignore[attr-defined]
        token_cache.credentials_changed()


def _deleted(sender: type[AbstractBaseSession], instance: AbstractBaseSession, **kwargs: Any) -> None:
    if instance.expire_date > timezone.now() and _login_in(instance.session_data) is not None:
        token_cache.credentials_changed()


def connect_signals() -> None:
    """Called once from the app's ready(), in every process that may change sessions (a user's
    own changes are token_cache's)."""
    model = session_model()
    if model is None:
        return  # nothing is remembered
    pre_save.connect(_note_before_save, sender=model, dispatch_uid="sessions_app.session_cache.before_save")
    post_save.connect(_saved, sender=model, dispatch_uid="sessions_app.session_cache.saved")
    post_delete.connect(_deleted, sender=model, dispatch_uid="sessions_app.session_cache.deleted")
