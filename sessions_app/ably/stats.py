"""The mirror's counters, the figures an operator reads (`GET /api/ably/stats`, or
`manage.py ably_mirror --stats`): what was published, retried, refused, lost and repaired.

Counted in memory on the hot side of the mirror and added to one Redis hash about once a
second, so that every mirror process of a deployment adds to the same figures.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import redis

from sessions_app.ably.config import redis_key

COUNTERS = (
    "messages_published",  # creates (inputs, run lifecycle, outputs)
    "appends",  # appends to streamed answers (each carries many deltas)
    "updates",  # whole-message updates: after an ambiguous append, or an answer rewritten
    "retries",  # requests sent again (after an outage, a 429, a timeout)
    "rate_limited",  # 429 answers (Ably's 42913: over the channel's message rate)
    "unavailable",  # requests that failed for want of an answer (5xx, timeout, refused)
    "rejected",  # requests Ably refused for good (4xx): logged, skipped
    "gaps",  # times the event log no longer held what the mirror had not published yet
    "events_from_archive",  # events of those gaps read from the archive instead (it keeps no deltas)
    "answers_rewritten",  # answers republished whole because their deltas were lost
    "cancels_applied",  # ai-cancel messages turned into a cancel
    "cancels_ignored",  # ai-cancel messages from a non-member or malformed
    "cancels_held",  # ai-cancel messages for a message or turn not seen yet
)


def stats_key() -> str:
    return redis_key("stats")


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.gauges: dict[str, float] = {}

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            self.counts[name] += amount

    def flush(self, client: redis.Redis) -> None:
        """Add what was counted since the last flush to the deployment's figures."""
        counts, self.counts = self.counts, Counter()
        pipe = client.pipeline(transaction=False)
        for name, amount in counts.items():
            pipe.hincrby(stats_key(), name, amount)
        for name, value in self.gauges.items():
            pipe.hset(stats_key(), name, value)
        pipe.hset(stats_key(), "heartbeat", time.time())
        pipe.execute()


def read_stats(client: redis.Redis) -> dict[str, Any]:
    """The deployment's figures: every counter (0 when never counted), the gauges, and how
    many seconds ago a mirror last reported (None: never)."""
    raw = {k.decode(): v.decode() for k, v in client.hgetall(stats_key()).items()}  # type: ignore[union-attr]
    figures: dict[str, Any] = {name: int(raw.get(name, 0)) for name in COUNTERS}
    for name in ("channels_active", "events_behind"):
        figures[name] = int(float(raw.get(name, 0)))
    heartbeat = raw.get("heartbeat")
    figures["seconds_since_report"] = round(time.time() - float(heartbeat), 1) if heartbeat else None
    return figures
