"""Ably token requests for members: signed here with the API key (which never leaves the
server), for the member's clientId, and able to do three things on one channel only, the
session's: subscribe, read history, publish (for `ai-cancel`; docs/ably.md says why that is
safe). No update, delete or append capability: a member cannot touch a message of ours.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ably.types.capability import Capability
from ably.types.tokenrequest import TokenRequest
from django.contrib.auth.models import AbstractBaseUser

from sessions_app.ably.config import AblyConfig, ably_config, redis_key
from sessions_app.cancellation.services import client_id_of
from sessions_app.errors import NotFound
from sessions_app.infra.live_state import sync_redis
from sessions_app.sessions.services import require_member

TOKEN_TTL_MS = 60 * 60 * 1000
MEMBER_OPERATIONS = ("history", "publish", "subscribe")


def member_capability(config: AblyConfig, session_id: str) -> dict[str, list[str]]:
    return {config.channel(session_id): list(MEMBER_OPERATIONS)}


def ably_token_request(*, session_id: Any, user: AbstractBaseUser) -> dict[str, Any]:
    """A signed token request for a member of the session (NotFound when Ably is off,
    NotFound / Forbidden for a session the user is not a member of). The mirror is told to
    listen on the channel: the member is about to be there, and may cancel."""
    config = ably_config()
    if config is None:
        raise NotFound("the Ably channel is not configured on this server")
    session = require_member(session_id=session_id, user=user)
    request = TokenRequest(
        key_name=config.key_name,
        client_id=client_id_of(user),
        capability=str(Capability(member_capability(config, str(session.pk)))),
        ttl=TOKEN_TTL_MS,
        timestamp=int(time.time() * 1000),
        nonce=uuid.uuid4().hex,
    )
    request.sign_request(config.key_secret.encode())
    sync_redis().publish(redis_key("watch"), str(session.pk))
    return {k: v for k, v in request.to_dict().items() if v is not None}
