"""The per-user send rate limit (SESSIONS_APP["SENDS_PER_MINUTE"]), reserved from Redis in
blocks (decision 030).

Every process shares one count per user and minute in Redis. A process does not ask it on
every send: it reserves a block of the user's sends (INCRBY), then spends the block
locally, and asks again when it runs out. A reservation that takes the count past the
limit gets only what was left, so no more than the limit is ever sent in a minute, however
many processes a user sends through; a block reserved and not spent in one process is lost
to the others until the minute ends (at most a block per process). Within a process, a user
sending now and then pays one Redis round trip per block instead of one per send (~1 ms of
an HTTP send's time on a 2-core machine).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser

from sessions_app.conf import app_settings
from sessions_app.errors import RateLimited
from sessions_app.infra import live_state

BLOCK_SHARE = 20  # a block is this fraction of the limit (1/20)...
MAX_BLOCK = 30  # ...and at most this many sends


@dataclass
class _Reserved:
    """Sends this process may still start this minute, per user pk."""

    window: int = -1
    limit: int = 0
    left: Counter[int] = field(default_factory=Counter)


_reserved = _Reserved()
_lock = threading.Lock()


def refusals(users: Sequence[AbstractBaseUser]) -> list[RateLimited | None]:
    """Count one send against each user's minute (a user may appear more than once); the
    sends beyond the limit are refused. At most one Redis round trip, for the users whose
    block ran out."""
    limit = int(app_settings.SENDS_PER_MINUTE)
    if limit <= 0 or not users:
        return [None] * len(users)
    window = int(time.time() // 60)
    wanted = Counter(int(user.pk) for user in users)
    with _lock:
        if (_reserved.window, _reserved.limit) != (window, limit):
            _reserved.window, _reserved.limit, _reserved.left = window, limit, Counter()
        short = {pk: count - _reserved.left[pk] for pk, count in wanted.items() if _reserved.left[pk] < count}
        if short:
            _reserve(short, window, limit)
        answers: list[RateLimited | None] = []
        for user in users:
            pk = int(user.pk)
            if _reserved.left[pk] > 0:
                _reserved.left[pk] -= 1
                answers.append(None)
            else:
                answers.append(RateLimited(f"more than {limit} sends a minute; wait a moment"))
    return answers


def _reserve(short: dict[int, int], window: int, limit: int) -> None:
    """Reserve, for each user, a block of at least what is missing (one pipeline)."""
    block = max(1, min(limit // BLOCK_SHARE, MAX_BLOCK))
    asked = {pk: max(missing, block) for pk, missing in short.items()}
    pipe = live_state.sync_redis().pipeline(transaction=False)
    for pk, count in asked.items():
        key = live_state.Keys.rate(pk, window)
        pipe.incrby(key, count)
        pipe.expire(key, 120)
    totals = pipe.execute()[::2]
    for (pk, count), total in zip(asked.items(), totals, strict=True):
        # The count before this reservation was total - count; what is left of the limit
        # above it is this process's.
        _reserved.left[pk] += max(0, min(count, limit - (int(total) - count)))


def forget() -> None:
    """Drop what this process has reserved (tests that start a user's minute afresh)."""
    with _lock:
        _reserved.window = -1
