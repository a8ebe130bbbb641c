"""Scale-out on one machine: two web (Daphne) and two worker (Celery) processes sharing Redis
and PostgreSQL. A turn sent through one web process streams to a device on the other; a
cancel through either stops a turn on either worker; the queue policy holds across
processes; presence drops the devices of a web process that died.

PostgreSQL: the test database when DATABASE_URL names PostgreSQL, else a database of this
module's own on the local server (postgres://postgres@127.0.0.1:5432); skipped without one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from chat_client import ChatClient, Device
from tests.faults.helpers import assert_shows_what_the_server_stored, settled
from tests.integration.helpers import expected_answer, session_with
from tests.stack import ROOT, Stack, start_stack

LOCAL_POSTGRES = os.environ.get("CHAT_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432")
PASSWORD = "scale-out-password"


def _run_manage(database: str, *args: str) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "DATABASE_URL": database}
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    subprocess.run(command, env=env, cwd=ROOT, check=True, timeout=300, capture_output=True)


@pytest.fixture(scope="module")
def postgres_url(test_database_url: str) -> Iterator[str]:
    if test_database_url.startswith("postgres"):
        yield test_database_url
        return
    import psycopg

    try:
        admin = psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"no PostgreSQL at {LOCAL_POSTGRES}: {exc}")
    name = f"chat_scaleout_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{LOCAL_POSTGRES}/{name}"
    try:
        _run_manage(url, "migrate", "--noinput", "-v", "0")
        yield url
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="module")
def users(postgres_url: str) -> Callable[[], tuple[str, str]]:
    """`users()` -> two new usernames (a user and a second one) in the database."""

    def make() -> tuple[str, str]:
        name = f"so{uuid.uuid4().hex[:8]}"
        _run_manage(postgres_url, "ensure_demo_user", "--username", name, "--password", PASSWORD)
        return name, f"{name}2"

    return make


@pytest.fixture(scope="module")
def two_by_two(postgres_url: str) -> Iterator[Stack]:
    """Two web and two worker processes on one Redis and PostgreSQL."""
    stack = start_stack(database=postgres_url, key_prefix=f"{os.environ['CHAT_KEY_PREFIX']}-so{uuid.uuid4().hex[:6]}")
    try:
        stack.start_worker("worker-2")
        stack.start_web("web-2")
        yield stack
    finally:
        stack.stop()


async def log_in(*pairs: tuple[str, str]) -> list[ChatClient]:
    return [await ChatClient.login(url, user, PASSWORD) for url, user in pairs]


def streaming(device: Device, turn_id: str) -> bool:
    return any(e.get("turnId") == turn_id for e in device.events_of("delta"))


def workers_of(database: str, turn_ids: list[str]) -> dict[str, str]:
    """turnId -> the worker id that claimed it (empty: none yet)."""
    import psycopg

    with psycopg.connect(database) as connection:
        rows = connection.execute(
            "SELECT turn_id, worker_id FROM sessions_app_turn WHERE turn_id = ANY(%s)", [turn_ids]
        ).fetchall()
    return {turn_id: worker for turn_id, worker in rows}


def worker_pid(worker_id: str) -> int:
    """The pid in a worker id (<prefix>/<host>:<pid>:<random>)."""
    return int(worker_id.rsplit(":", 2)[1])


async def test_a_turn_sent_through_one_web_process_streams_to_a_device_on_the_other(two_by_two, users):
    alice, bob = users()
    via_one, via_two = await log_in((two_by_two.web_url("web"), alice), (two_by_two.web_url("web-2"), bob))
    try:
        session = await session_with(via_one, via_two, tokens=60, rate=100)
        here = await via_one.connect(session["id"])
        there = await via_two.connect(session["id"])
        sent = await via_one.send(session["id"], "across processes")  # HTTP, web process one
        assert await settled(there, sent["turnId"]) == "complete"
        assert there.text_of(sent["assistantMessageId"]) == expected_answer("across processes", 60)
        back = await there.send("and back")  # websocket, web process two
        assert await settled(here, back.turn_id) == "complete"
        await assert_shows_what_the_server_stored(via_one, session["id"], here, there)
    finally:
        for client in (via_one, via_two):
            await client.aclose()


async def test_a_cancel_through_either_web_process_stops_a_turn_on_either_worker(two_by_two, postgres_url, users):
    alice, bob = users()
    via_one, via_two = await log_in((two_by_two.web_url("web"), alice), (two_by_two.web_url("web-2"), bob))
    pids = {two_by_two.pid("worker"), two_by_two.pid("worker-2")}
    try:
        session = await session_with(via_one, via_two, tokens=2000, rate=20)
        watcher = await via_two.connect(session["id"])
        by_worker: dict[int, str] = {}
        sent: list[str] = []
        while len(by_worker) < 2 and len(sent) < 40:  # turns spread over the workers as they take tasks
            turn_id = (await via_one.send(session["id"], f"long {len(sent)}"))["turnId"]
            sent.append(turn_id)
            # Streaming: a worker claimed it.
            await watcher.wait_for(partial(streaming, watcher, turn_id))
            by_worker.setdefault(worker_pid(workers_of(postgres_url, [turn_id])[turn_id]), turn_id)
        assert set(by_worker) == pids, f"turns ran on {set(by_worker)} of {pids}"
        first, second = (by_worker[pid] for pid in sorted(pids))

        over_http = await via_two.cancel(session["id"], turn_id=first)  # web two -> worker one (or two)
        device_on_one = await via_one.connect(session["id"])
        over_ws = await device_on_one.cancel(turn_id=second)  # web one -> the other worker
        assert over_http["cancelled"] == [first] and over_ws["cancelled"] == [second]
        for device in (watcher, device_on_one):
            assert await settled(device, first) == "cancelled"
            assert await settled(device, second) == "cancelled"
        await via_one.cancel(session["id"], all=True)
        for turn_id in sent:
            await settled(watcher, turn_id)
        await assert_shows_what_the_server_stored(via_one, session["id"], watcher, device_on_one)
    finally:
        for client in (via_one, via_two):
            await client.aclose()


async def test_the_queue_policy_holds_across_web_and_worker_processes(two_by_two, users):
    alice, bob = users()
    via_one, via_two = await log_in((two_by_two.web_url("web"), alice), (two_by_two.web_url("web-2"), bob))
    try:
        session = await session_with(via_one, via_two, tokens=30, rate=100, policy="queue")
        one = await via_one.connect(session["id"])
        two = await via_two.connect(session["id"])
        handles = await asyncio.gather(*(device.send(f"queued {i}") for i, device in enumerate([one, two, one, two])))
        statuses = sorted(h.status for h in handles)
        assert statuses == ["active", "queued", "queued", "queued"]
        for handle in handles:
            for device in (one, two):
                assert await settled(device, handle.turn_id) == "complete"
        for device in (one, two):
            running: set[str] = set()
            order: list[str] = []
            for event in device.events:
                if event["type"] == "turn.start":
                    running.add(event["turnId"])
                    order.append(event["turnId"])
                    assert len(running) == 1, f"two turns active at once: {running}"
                elif event["type"] == "turn.end":
                    running.discard(event["turnId"])
            queued = [e["turnId"] for e in device.events if e["type"] == "turn.queued"]
            assert order[1:] == queued  # first in, first out, whichever process took each
        await assert_shows_what_the_server_stored(via_one, session["id"], one, two)
    finally:
        for client in (via_one, via_two):
            await client.aclose()


async def test_presence_drops_the_devices_of_a_web_process_that_died(postgres_url, users, fault_stack):
    stack = fault_stack(database=postgres_url, webs=2, workers=1)
    alice, bob = users()
    via_one, via_two = await log_in((stack.web_url("web"), alice), (stack.web_url("web-2"), bob))
    try:
        session = await session_with(via_one, via_two)
        await via_one.connect(session["id"])
        watcher = await via_two.connect(session["id"])
        await watcher.wait_for(lambda: watcher.online == sorted([alice, bob]))

        stack.kill("web", signal.SIGKILL)  # no goodbye: only its lease running out tells

        await watcher.wait_for(lambda: watcher.online == [bob], timeout=30)
        late = await via_two.connect(session["id"])
        assert late.online == [bob]
        assert (await via_two.session(session["id"]))["id"] == session["id"]
    finally:
        for client in (via_one, via_two):
            await client.aclose()
