"""API tokens a web process has already checked: a request with a known token costs no
database query (the query and its thread hop were ~1 ms of a trivial API request's ~1.8;
decision 024) and, while the credentials watch vouches for it, no Redis read either
(decision 029).

Revocation stays immediate everywhere. Every change that can turn a token away (a token
changed or deleted: revoke, logout, the admin, expiry; a user saved or deleted: deactivated, password
changed) renews one credentials generation in Redis and publishes it, in one MULTI/EXEC,
as it commits, before the revoking request answers. A known token is trusted only while
the generation is the one read before its database check; anything else (a change, Redis
unreachable) checks the database again. The generation is read from Redis unless the
process's credentials watch (web/credentials_watch.py) has heard nothing since the last
read, which it checks before every token is trusted. Known tokens are also forgotten after
KNOWN_SECONDS, so that a change made without model signals (a queryset `update()`) shows
within a minute. Revoking all of a user's tokens renews it even when there were none (a
logout ends a browser session; the user's websocket tickets count it: web/tokens.py).
Open websockets are checked again when the generation changes (web/open_sockets.py).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from knox.crypto import hash_token
from knox.models import AuthToken

from sessions_app.conf import app_settings, key_prefix
from sessions_app.infra import live_state
from sessions_app.infra.batching import GroupedCall, grouped
from sessions_app.infra.db_threads import db
from sessions_app.web import tokens
from sessions_app.web.credentials_watch import CredentialsWatch

KNOWN_SECONDS = 60.0
KNOWN_LIMIT = 10_000  # tokens remembered per process; the oldest go first


@dataclass(frozen=True, slots=True)
class _Known:
    user: AbstractBaseUser
    expiry: datetime | None
    generation: bytes
    until: float  # time.monotonic()


_known: dict[str, _Known] = {}
_watch: CredentialsWatch | None = None
# The generation last read, with what the watch had heard then: (heard, generation).
_read: tuple[int, bytes] | None = None


def _generation_key() -> str:
    return f"{key_prefix()}:credentials-generation"


def _channel() -> str:
    return f"{key_prefix()}:credentials-changed"


def watch_client_name(pid: int) -> str:
    """The Redis client name of a process's credentials watch (`CLIENT LIST` shows it)."""
    return f"{key_prefix()}:credentials-watch:{pid}"


async def user_for_token(key: str) -> AbstractBaseUser | None:
    """The active user an API token belongs to, or None if it is unknown, expired or
    revoked (tokens.lookup, remembered while nothing has been revoked since)."""
    found = await user_and_expiry(key)
    return None if found is None else found[0]


async def user_and_expiry(key: str) -> tuple[AbstractBaseUser, datetime | None] | None:
    """`user_for_token`, with the token's expiry (a websocket opened with it closes then)."""
    key = key.strip()
    if not tokens.well_formed(key):
        return None
    digest = hash_token(key)
    generation = await current_generation()
    known = _known.get(digest)
    if known is not None and generation is not None and known.generation == generation:
        if known.until > time.monotonic() and (known.expiry is None or known.expiry > timezone.now()):
            return known.user, known.expiry
    found = await db(tokens.lookup)(key)
    if found is None:
        _known.pop(digest, None)
        return None
    user, row = found
    if generation is not None:
        _remember(digest, _Known(user, row.expiry, generation, time.monotonic() + KNOWN_SECONDS))
    return user, row.expiry


async def current_generation() -> bytes | None:
    """The credentials generation: the one read last while the watch has heard nothing since,
    else read from Redis (one read for the requests that arrive together)."""
    global _read
    heard = _heard()
    if heard is not None and _read is not None and _read[0] == heard:
        return _read[1]
    generation = await grouped("credentials-generation", lambda: GroupedCall(_generations, max_batch=None)).call(None)
    if generation is not None and heard is not None and _heard() == heard:
        _read = (heard, generation)  # nothing arrived while it was read
    return generation


def _heard() -> int | None:
    global _watch
    if not app_settings.CREDENTIALS_WATCH:
        return None
    if _watch is None:
        _watch = CredentialsWatch(_channel(), watch_client_name(os.getpid()))
    _watch.keep_polled()
    return _watch.heard()


async def _generations(requests: list[None]) -> list[bytes | None]:
    """One read for every request that arrived while the previous read was under way (each
    read starts after its requests arrived, so none can miss a change that committed
    before it)."""
    return [await _generation()] * len(requests)


async def _generation() -> bytes | None:
    """The credentials generation; None if Redis cannot say (then nothing is trusted). A
    generation is random, never counted: one that Redis lost starts afresh, matching
    nothing remembered."""
    try:
        client = live_state.async_redis()
        value = await client.get(_generation_key())
        if value is None:
            await client.set(_generation_key(), uuid.uuid4().hex, nx=True)
            value = await client.get(_generation_key())
    except Exception:
        return None
    return value if isinstance(value, bytes) else None


def _remember(digest: str, known: _Known) -> None:
    if len(_known) >= KNOWN_LIMIT and digest not in _known:
        _known.pop(next(iter(_known)))
    _known[digest] = known


def credentials_changed() -> None:
    """A token or user changed in the current transaction: once it commits (before the
    request that made the change answers), no process trusts what it remembers."""
    transaction.on_commit(_bump)


def _bump() -> None:
    global _read
    _known.clear()
    _read = None
    generation = uuid.uuid4().hex
    with live_state.sync_redis().pipeline(transaction=True) as pipe:
        pipe.set(_generation_key(), generation)
        pipe.publish(_channel(), generation)  # every process's watch hears it with the change
        pipe.execute()


# --- what changes credentials ------------------------------------------------------------


def _token_changed(sender: Any, created: bool = False, **kwargs: Any) -> None:
    if not created:  # a new token changes nothing remembered
        credentials_changed()


def _user_changed(sender: Any, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login changes nothing a token may do
    credentials_changed()


def _all_revoked(sender: Any, **kwargs: Any) -> None:
    credentials_changed()


def connect_signals() -> None:
    """Called once from the app's ready(), in every process that may change credentials."""
    user_model = get_user_model()
    tokens.all_revoked_none_held.connect(_all_revoked, dispatch_uid="sessions_app.token_cache.all_revoked")
    post_save.connect(_token_changed, sender=AuthToken, dispatch_uid="sessions_app.token_cache.token_saved")
    post_delete.connect(_token_changed, sender=AuthToken, dispatch_uid="sessions_app.token_cache.token_deleted")
    post_save.connect(_user_changed, sender=user_model, dispatch_uid="sessions_app.token_cache.user_saved")
    post_delete.connect(_user_changed, sender=user_model, dispatch_uid="sessions_app.token_cache.user_deleted")
