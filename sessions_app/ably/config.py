"""The Ably settings (`ABLY_*`, docs/ably.md), a session's channel, and the SDK's clients
built from them. Host, port and TLS exist so that tests can point the SDK at a local server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ably import AblyRealtime, AblyRest
from django.conf import settings

from sessions_app.conf import key_prefix

# The identity the mirror's realtime connection takes. Django usernames cannot hold a colon,
# so no member can ever be given it.
MIRROR_CLIENT_ID = "chat:mirror"


@dataclass(frozen=True)
class AblyConfig:
    api_key: str
    rest_host: str | None
    realtime_host: str | None
    port: int | None
    tls: bool
    channel_prefix: str
    append_interval: float  # seconds between two appends on one channel
    timeout: float  # seconds: one request to Ably

    @property
    def key_name(self) -> str:
        return self.api_key.partition(":")[0]

    @property
    def key_secret(self) -> str:
        return self.api_key.partition(":")[2]

    def channel(self, session_id: str) -> str:
        return f"{self.channel_prefix}{session_id}"

    def session_of(self, channel: str) -> str | None:
        return channel[len(self.channel_prefix) :] if channel.startswith(self.channel_prefix) else None


def ably_config() -> AblyConfig | None:
    """The configuration, or None when Ably is off (no `ABLY_API_KEY`)."""
    key = str(getattr(settings, "ABLY_API_KEY", "") or "")
    if not key:
        return None
    port = int(getattr(settings, "ABLY_PORT", 0) or 0)
    return AblyConfig(
        api_key=key,
        rest_host=getattr(settings, "ABLY_REST_HOST", None) or None,
        realtime_host=getattr(settings, "ABLY_REALTIME_HOST", None) or None,
        port=port or None,
        tls=bool(getattr(settings, "ABLY_TLS", True)),
        channel_prefix=str(getattr(settings, "ABLY_CHANNEL_PREFIX", "chat:")),
        append_interval=float(getattr(settings, "ABLY_APPEND_INTERVAL_MS", 100)) / 1000,
        timeout=float(getattr(settings, "ABLY_TIMEOUT", 10)),
    )


def redis_key(name: str) -> str:
    """A Redis key of the mirror's own (stats, the watch channel)."""
    return f"{key_prefix()}:ably:{name}"


def session_state_key(session_id: str) -> str:
    """Where the mirror keeps how far it got on a session (next to the session's log)."""
    return f"{key_prefix()}:{{{session_id}}}:ably"


def inputs_on_channel_key(session_id: str) -> str:
    """The user messages an Ably client published before sending them (invocations.py): on
    the channel already, so the mirror does not publish them again."""
    return f"{session_state_key(session_id)}:inputs"


def rest_client(config: AblyConfig) -> AblyRest:
    """The REST client the mirror publishes with.

    The SDK refuses basic auth over plain HTTP, so without TLS it signs its own tokens with
    the key; those carry clientId "*" so that user messages can be published under their
    author's clientId. Retries are the mirror's (writer.py): one host, one attempt here."""
    options: dict[str, Any] = {
        "key": config.api_key,
        "tls": config.tls,
        "http_request_timeout": config.timeout,
        "http_open_timeout": config.timeout,
        "http_max_retry_count": 1,
        "fallback_hosts": [] if config.rest_host else None,
        "idempotent_rest_publishing": True,
    }
    if config.rest_host:
        options["endpoint"] = config.rest_host
    if config.port:
        options["tls_port" if config.tls else "port"] = config.port
    if not config.tls:
        options.update(use_token_auth=True, client_id="*")
    return AblyRest(**options)


def realtime_client(config: AblyConfig, rest: AblyRest) -> AblyRealtime:
    """The realtime client that listens for cancels. Its tokens come from the REST client
    (the realtime client's own REST calls do not take a custom port)."""

    async def token(_params: dict[str, Any]) -> Any:
        return await rest.auth.request_token({"client_id": MIRROR_CLIENT_ID})

    options: dict[str, Any] = {"auth_callback": token, "tls": config.tls}
    host = config.realtime_host or config.rest_host
    if host:
        options["endpoint"] = f"{host}:{config.port}" if config.port else host
        options["fallback_hosts"] = []
    return AblyRealtime(**options)
