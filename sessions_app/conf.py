"""The app's settings: one namespace (`SESSIONS_APP` in the site's settings) with defaults.

A site overrides only the keys it cares about:

    SESSIONS_APP = {"QUEUE_LIMIT": 5, "CANCEL_AUTHORISER": "sessions_app.cancellation.authorisers.turn_owner_only"}
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Double texting: the policy of a new session, and the bound of a session's queue.
    "DEFAULT_POLICY": "concurrent",
    "QUEUE_LIMIT": 10,
    # Delta coalescing: the longest a token waits before it is sent. The window adapts to
    # load: it is 0 while a worker process streams a single turn, and grows by
    # COALESCE_PER_TURN_MS for each further turn streaming in the same process.
    "COALESCE_WINDOW_MS": 40.0,
    "COALESCE_PER_TURN_MS": 0.25,
    # How long a Python thread may keep the GIL while others wait (sys.setswitchinterval),
    # in every process that loads the app; None keeps Python's 5 ms.
    "THREAD_SWITCH_INTERVAL_MS": 1.0,
    # Keep the objects a server process holds once it is ready out of later garbage
    # collections (gc.freeze): full collections then pause it for a few ms, not ~100.
    "GC_FREEZE_AT_START": True,
    # Connections each process's Redis pools may open; beyond it a caller waits for one.
    "REDIS_MAX_CONNECTIONS": 64,
    # A web process trusts the API tokens it knows while a subscription tells it nothing
    # changed (decision 029): no Redis read per request. False: it reads the credentials
    # generation from Redis on every request instead (~0.4 ms), for deployments where the
    # network between web processes and Redis may drop packets and a revocation must not
    # wait for a retransmission.
    "CREDENTIALS_WATCH": True,
    # Dotted paths of the hooks.
    "CANCEL_AUTHORISER": "sessions_app.cancellation.authorisers.allow_any_member",
    "ON_ABORT": None,
    # A cancel for a turnId not seen yet is held this long, at most this many per session.
    "HELD_CANCEL_TTL_SECONDS": 300,
    "HELD_CANCEL_LIMIT": 100,
    # Live event log in Redis: how many events per session it keeps, and for how long an
    # idle session's log is kept. Older events are read from the database archive.
    "EVENT_LOG_MAXLEN": 10_000,
    "EVENT_LOG_TTL_SECONDS": 7 * 24 * 3600,
    # How often each Daphne process checks, per session it serves, that no event was lost
    # by the (at-most-once) channel layer after the last one it received.
    "TAIL_CHECK_SECONDS": 1.0,
    # Worker liveness: a worker refreshes its heartbeat this often; a turn whose worker has
    # not been heard of for WORKER_LOST_AFTER_SECONDS ends with error `worker_lost`.
    "HEARTBEAT_SECONDS": 2.0,
    "WORKER_LOST_AFTER_SECONDS": 10.0,
    # Hand out again the active turns no worker claimed for WORKER_LOST_AFTER_SECONDS while
    # the task queue is empty (Redis lost their tasks). It reads every such turn of the
    # database: turn it off where several deployments share one database (the test
    # suite's stacks do), or another deployment's workers would take them.
    "HAND_OUT_LOST_TASKS": True,
    # Presence: each web process states which users it has devices of, per session, with a
    # lease it renews every third of this; the devices of a process that died drop out of
    # `online` when its lease ends.
    "PRESENCE_LEASE_SECONDS": 15.0,
    # An interrupting send's turn starts once the sender's turns it interrupts have ended;
    # a worker that has not stopped one within this many seconds loses it (the turn ends
    # `cancelled` with what it streamed) and the new turn starts. Checked by every worker's
    # reaper, so the wait ends within this plus HEARTBEAT_SECONDS.
    "INTERRUPT_WAIT_SECONDS": 5.0,
    # Input limits (413 too_large beyond them).
    "MAX_MESSAGE_CHARS": 32_000,
    "MAX_FRAME_BYTES": 256 * 1024,
    "MAX_MESSAGES_PER_SEND": 20,
    # Websocket limits (docs/security.md "Limits"; 0 switches one off). Connections one user
    # holds in one server process (beyond: error rate_limited, close 4429); frames one
    # connection may send a minute (beyond: error rate_limited for each, and close 4429
    # once as many again were refused); bytes waiting for a connection that does not read
    # (beyond: close 4408, and the client resumes with ?after=).
    "MAX_CONNECTIONS_PER_USER": 64,
    "FRAMES_PER_MINUTE": 1200,
    "MAX_OUTBOX_BYTES": 8 * 1024 * 1024,
    # Credentials on the websocket URL: `?token=<API token>` (kept for clients that cannot
    # set headers; URLs end up in access logs, so production turns it off) and the one-use
    # `?ticket=` of POST /api/auth/ws-ticket, valid this many seconds.
    "ALLOW_QUERY_TOKEN": True,
    "WS_TICKET_SECONDS": 30,
    # Sends per user per minute, across every process (429 rate_limited beyond it); each
    # process reserves them from Redis in blocks of a twentieth, at most 30 (decision
    # 030). 0 switches the limit off.
    "SENDS_PER_MINUTE": 600,
    # The models sessions may use; "demo" is always there.
    "DEFAULT_MODEL": "demo",
    # Longest wait of POST /wait.
    "MAX_WAIT_SECONDS": 60,
    # Model providers (sessions_app/llm; docs/providers.md). Keys and base URLs come from the
    # environment only. A failure before the first token is retried PROVIDER_RETRIES times,
    # waiting PROVIDER_RETRY_BACKOFF_SECONDS, doubled each time; never once tokens streamed.
    "PROVIDER_RETRIES": 2,
    "PROVIDER_RETRY_BACKOFF_SECONDS": 0.5,
    # Longest silence (seconds) of a model's HTTP stream, first token included, before the
    # turn ends with provider_timeout; and the connect timeout.
    "PROVIDER_TIMEOUT_SECONDS": 120.0,
    "PROVIDER_CONNECT_TIMEOUT_SECONDS": 10.0,
    # The context sent to a model: the newest messages of the branch that fit this many
    # characters (the turn's user message always goes).
    "CONTEXT_BUDGET_CHARS": 200_000,
    # System prompt of sessions whose modelOptions set none.
    "SYSTEM_PROMPT": "",
    # Server-side tools offered to models that support them: dotted paths of
    # sessions_app.worker.providers.tools.Tool objects; and the most model calls one turn makes.
    "TOOLS": [],
    "TOOL_ROUNDS": 8,
    # Agents (docs/agents.md): a list of {"name", "model", "system", "options", "tools",
    # "sub_agents", "description"}, a JSON text of one, or "example" for the shipped example
    # (sessions_app/agents/example.py). An agent acts in the sessions it was added to, with
    # the clientId agent:<name>.
    "AGENTS": [],
    # Turns active at once in one session (0: no cap). A send beyond it follows
    # ACTIVE_TURNS_OVERFLOW: "queue" (it waits, like the queue policy, and starts when a
    # turn ends) or "reject" (429 rate_limited).
    "MAX_ACTIVE_TURNS": 16,
    "ACTIVE_TURNS_OVERFLOW": "queue",
}


class AppSettings:
    """Attribute access to SESSIONS_APP with defaults, read at access time (a change of the
    setting, as tests make it, is seen at once)."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown SESSIONS_APP setting {name!r}")
        return configured().get(name, DEFAULTS[name])


app_settings = AppSettings()


@functools.cache
def key_prefix() -> str:
    """Prefix of every Redis key and channel of this deployment."""
    return str(getattr(settings, "KEY_PREFIX", "chat"))


@functools.cache
def configured() -> dict[str, Any]:
    """The site's SESSIONS_APP as it stands (the dict itself: a change inside it is seen)."""
    return getattr(settings, "SESSIONS_APP", {})


# Read on every event, key and request (a Django setting's read goes through its lazy
# object, ~4% of a worker's CPU while it streams): kept until the setting changes.
@receiver(setting_changed)
def _forget_changed(*, setting: str, **_kwargs: Any) -> None:
    if setting == "KEY_PREFIX":
        key_prefix.cache_clear()
    elif setting == "SESSIONS_APP":
        configured.cache_clear()
