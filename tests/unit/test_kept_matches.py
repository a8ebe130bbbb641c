"""What a web process keeps for the garbage collector to walk: the API paths' kept URL
matches share their lists, and the URLconf is built at start-up, before a server process
freezes what it holds (full collections walk everything else, and pause the process)."""

from __future__ import annotations

import gc
import uuid

from django.urls import get_resolver

from sessions_app.web.http_entry import _resolved
from tests.unit.web_process import lines_printed_by_a_web_process

PATHS = 400


def tracked_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


def test_the_kept_matches_of_many_sessions_paths_cost_a_few_objects_each() -> None:
    resolver = get_resolver()
    for endpoint in ("turns", "cancel", "events"):  # the URLconf built, as a server has it from start-up
        _resolved(resolver, f"/api/sessions/{uuid.uuid4()}/{endpoint}")
    _resolved.cache_clear()
    before = tracked_objects()
    for _ in range(PATHS):
        session = uuid.uuid4()
        for endpoint in ("turns", "cancel", "events"):
            _resolved(resolver, f"/api/sessions/{session}/{endpoint}")
    grown = tracked_objects() - before
    _resolved.cache_clear()

    # Each match holds its path's arguments; the patterns tried before it (22 lists for a
    # session's path) and its namespaces are shared by every path of its route.
    assert grown / (3 * PATHS) <= 4  # ~2 here (the lru_cache entry, the match, its arguments); 26+ unshared
    first, second = (_resolved(resolver, f"/api/sessions/{uuid.uuid4()}/turns") for _ in range(2))
    assert first.tried is second.tried and first.tried
    assert first.kwargs != second.kwargs


def test_a_server_process_builds_its_urlconf_before_serving() -> None:
    """The ASGI application loads the URLconf (the API's routes and schemas) as it is made,
    so that it is frozen with the rest of start-up rather than walked by every collection."""
    code = "import sys\nprint('sessions_app.web.api.endpoints' in sys.modules)\n"
    assert lines_printed_by_a_web_process(code)[-1] == "True"
