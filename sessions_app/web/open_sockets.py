"""Open websockets whose credential ends while they are open (decision 029, amended).

An open websocket is checked again, without a database read per command, whenever the
credentials generation changes (web/token_cache.py: every revocation, logout, password
change, deactivation renews it, and every process hears it on its credentials watch): its
event loop looks every CHECK_SECONDS, and before each command. A token that is gone or
expired, a ticket's user whose tokens were all revoked since it was issued (or who is no
longer active), a browser session logged out of or whose password hash no longer matches:
the websocket closes with 4401. web/auth.py records what opened each websocket
(`Credential`).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from knox.models import AuthToken
from redis.exceptions import RedisError

from sessions_app.infra.db_threads import db
from sessions_app.web import token_cache, tokens

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.5  # how often a loop's open websockets look for a credentials change
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"


@dataclass(slots=True)
class Credential:
    """What opened a websocket, checked again when the credentials generation changes."""

    kind: str  # "token", "ticket" or "session"
    user_pk: Any
    generation: bytes | None  # read before the credential was checked (None: Redis could not say)
    digest: str = ""  # a token's
    expiry: datetime | None = None  # a token's
    session_key: str = ""  # a browser session's
    revocations: int = 0  # a ticket's: how often all the user's tokens were revoked when it was issued


class Listener(Protocol):
    def credentials_revoked(self) -> None: ...


class OpenSockets:
    """The websockets of one event loop and the credentials that opened them. They are
    checked against the database only when the credentials generation has changed since
    they were last (or Redis cannot say which it is): one query per kind of credential for
    all of them, never one per command."""

    def __init__(self) -> None:
        self.sockets: dict[Listener, Credential] = {}
        self.verified: bytes | None = None  # the generation every socket not in `unverified` was checked at
        self.unverified: set[Listener] = set()
        self.expiries: dict[Listener, asyncio.TimerHandle] = {}
        self.lock = asyncio.Lock()
        self.ticker: asyncio.Task[None] | None = None
        self.failing = False

    def add(self, listener: Listener, credential: Credential) -> None:
        self.sockets[listener] = credential
        if credential.generation is None or credential.generation != self.verified:
            self.unverified.add(listener)
        self._expire_at(listener, credential.expiry)
        if self.ticker is None or self.ticker.done():
            self.ticker = asyncio.get_running_loop().create_task(self._tick(), name="websocket-credentials")

    def discard(self, listener: Listener) -> None:
        self.sockets.pop(listener, None)
        self.unverified.discard(listener)
        timer = self.expiries.pop(listener, None)
        if timer is not None:
            timer.cancel()
        if not self.sockets and self.ticker is not None and self.ticker is not asyncio.current_task():
            self.ticker.cancel()  # nothing left to check: no task left pending when the server stops
            self.ticker = None

    async def trusted(self, listener: Listener) -> bool:
        """Before a command: False once the socket's credential has ended (it is closing).
        Free while the generation is the one the socket was checked at."""
        credential = self.sockets.get(listener)
        if credential is None:
            return True
        generation = await token_cache.current_generation()
        if generation is None or generation == credential.generation:
            return True  # nothing changed (or Redis cannot say: the next look checks)
        await self.check()
        return listener in self.sockets

    async def check(self) -> None:
        """Check the sockets not checked at the current generation; close those whose
        credential ended. The generation is read before the database: a change that
        commits meanwhile renews it, and the next look checks again."""
        async with self.lock:
            generation = await token_cache.current_generation()
            if generation is not None and generation == self.verified:
                batch = [listener for listener in self.unverified if listener in self.sockets]
            else:
                batch = list(self.sockets)
            if not batch:
                self.verified = generation
                return
            verdicts = await db(_verdicts)([self.sockets[listener] for listener in batch])
            for listener, (valid, expiry) in zip(batch, verdicts, strict=True):
                credential = self.sockets.get(listener)
                if credential is None:
                    continue  # closed meanwhile
                if not valid:
                    self._revoke(listener)
                    continue
                credential.generation = generation
                if expiry != credential.expiry:
                    credential.expiry = expiry
                    self._expire_at(listener, expiry)
            self.verified = generation
            self.unverified = {
                listener
                for listener, credential in self.sockets.items()
                if generation is None or credential.generation != generation
            }

    def _expire_at(self, listener: Listener, expiry: datetime | None) -> None:
        timer = self.expiries.pop(listener, None)
        if timer is not None:
            timer.cancel()
        if expiry is not None:
            delay = max(0.0, (expiry - timezone.now()).total_seconds())
            self.expiries[listener] = asyncio.get_running_loop().call_later(delay, self._revoke, listener)

    def _revoke(self, listener: Listener) -> None:
        if listener in self.sockets:
            self.discard(listener)
            listener.credentials_revoked()

    async def _tick(self) -> None:
        while self.sockets:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.check()
            except Exception:
                if not self.failing:  # once per outage, not every tick
                    logger.warning("open websockets' credentials could not be checked", exc_info=True)
                self.failing = True
            else:
                self.failing = False


_open: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OpenSockets] = weakref.WeakKeyDictionary()


def for_this_loop() -> OpenSockets:
    """The running loop's (one in Daphne; tests may run several loops, one after another)."""
    loop = asyncio.get_running_loop()
    found = _open.get(loop)
    if found is None:
        found = _open[loop] = OpenSockets()
    return found


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    """A query's IN list in parts (SQLite bounds a statement's parameters)."""
    for at in range(0, len(values), size):
        yield values[at : at + size]


def _verdicts(credentials: list[Credential]) -> list[tuple[bool, datetime | None]]:
    """Whether each credential still holds (and a token's expiry): a few queries for all."""
    now = timezone.now()
    tokens_found: dict[str, tuple[datetime | None, Any, bool]] = {}
    for chunk in _chunks(sorted({c.digest for c in credentials if c.kind == "token"})):
        rows = AuthToken.objects.filter(digest__in=chunk).values_list("digest", "expiry", "user_id", "user__is_active")
        tokens_found.update({digest: (expiry, user_id, active) for digest, expiry, user_id, active in rows})
    ticket_users = sorted({c.user_pk for c in credentials if c.kind == "ticket"}, key=str)
    active = set(get_user_model().objects.filter(pk__in=ticket_users, is_active=True).values_list("pk", flat=True))
    session_keys = sorted({c.session_key for c in credentials if c.kind == "session"})
    try:
        revocations: dict[Any, int] | None = dict(
            zip(ticket_users, tokens.revocation_counts(ticket_users), strict=True)
        )
        ended = dict(zip(session_keys, tokens.ended_sessions(session_keys), strict=True))
    except RedisError:  # Redis is away: what the database says still counts (tokens, users, sessions)
        revocations, ended = None, {}
    session_users = _session_users([key for key in session_keys if not ended.get(key)])

    verdicts: list[tuple[bool, datetime | None]] = []
    for credential in credentials:
        if credential.kind == "token":
            found = tokens_found.get(credential.digest)
            valid = (
                found is not None
                and found[1] == credential.user_pk
                and found[2]
                and (found[0] is None or found[0] > now)
            )
            verdicts.append((valid, found[0] if found is not None else None))
        elif credential.kind == "ticket":
            valid = credential.user_pk in active and (
                revocations is None or revocations[credential.user_pk] == credential.revocations
            )
            verdicts.append((valid, None))
        else:
            verdicts.append((session_users.get(credential.session_key) == credential.user_pk, None))
    return verdicts


def _session_users(session_keys: list[str]) -> dict[str, Any]:
    """The user each browser session is still logged in as (None: nobody), as
    django.contrib.auth.get_user decides it for a request (the session's password hash
    must match the user's; an inactive user is nobody), without its writes: it flushes a
    session that does not match, and gives a new key to one that matches an old SECRET_KEY,
    which the browser would never hear of. With database sessions and Django's ModelBackend,
    one query for the sessions and one for their users."""
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    data: dict[str, dict[str, Any]] = {}
    if issubclass(store_class, DatabaseSessionStore):  # cached_db too: the database is the record
        model = store_class.get_model_class()
        for chunk in _chunks(session_keys):
            rows = model.objects.filter(session_key__in=chunk, expire_date__gt=timezone.now())
            for key, text in rows.values_list("session_key", "session_data"):
                data[key] = store_class().decode(text)
    else:
        data = {key: store_class(key).load() for key in session_keys}
    user_model = get_user_model()
    wanted: dict[str, tuple[Any, str]] = {}  # session key: (user pk, backend)
    for key, session in data.items():
        if SESSION_KEY in session and session.get(BACKEND_SESSION_KEY) in settings.AUTHENTICATION_BACKENDS:
            wanted[key] = (user_model._meta.pk.to_python(session[SESSION_KEY]), session[BACKEND_SESSION_KEY])
    users: dict[Any, Any] = {}
    for chunk in _chunks(sorted({pk for pk, path in wanted.values() if path == MODEL_BACKEND}, key=str)):
        # ModelBackend.get_user for all of them: the user, if it may authenticate (active)
        users.update({user.pk: user for user in user_model._default_manager.filter(pk__in=chunk)})
    found: dict[str, Any] = {}
    for key, (pk, path) in wanted.items():
        if path == MODEL_BACKEND:
            user = users.get(pk)
            user = user if user is not None and getattr(user, "is_active", True) else None
        else:
            user = load_backend(path).get_user(pk)
        if user is not None and _hash_matches(user, data[key].get(HASH_SESSION_KEY)):
            found[key] = user.pk
    return found


def _hash_matches(user: Any, session_hash: str | None) -> bool:
    if not hasattr(user, "get_session_auth_hash"):
        return True
    if not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, known) for known in hashes)
