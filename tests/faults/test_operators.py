"""What operators get: liveness and readiness for a load balancer, and Prometheus metrics of
every process of the host (PROMETHEUS_MULTIPROC_DIR) at one web process's /metrics."""

from __future__ import annotations

import re
import tempfile

import httpx

from chat_client import ChatClientError
from tests.faults.helpers import settled
from tests.integration.helpers import session_with
from tests.stack import free_port


def sample(metrics: str, name: str, labels: str = "") -> float:
    """The value of one sample of the exposition text (0 when absent)."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


async def test_readiness_needs_the_database_redis_and_a_heartbeating_worker(fault_stack):
    stack = fault_stack(workers=0)
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        waiting = await http.get("/readyz")
        assert waiting.status_code == 503 and waiting.json()["error"]["code"] == "unavailable"
        assert waiting.json()["checks"]["database"] == "ok" and waiting.json()["checks"]["redis"] == "ok"
        assert "worker" in waiting.json()["checks"]["workers"]

        stack.start_worker()  # returns once its heartbeat is in Redis

        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["checks"]["workers"] == "1 heartbeating"


async def test_metrics_cover_every_process_of_the_host(fault_stack, login):
    directory = tempfile.mkdtemp(prefix="chat-metrics-")
    stack = fault_stack(env={"PROMETHEUS_MULTIPROC_DIR": directory})
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=40, rate=200)
    device = await alice.connect(session["id"])
    done = await device.send("counted")
    await settled(device, done.turn_id)
    long = await device.send("cancelled", policy="concurrent")
    await device.wait_for(lambda: device.text_of(long.ack["assistantMessageId"]))
    await device.cancel(turn_id=long.turn_id)
    await settled(device, long.turn_id)
    try:
        await alice.turn(session["id"], "no-such-turn")
    except ChatClientError as exc:
        assert exc.code == "not_found"

    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.get("/metrics")
    text = response.text
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    assert sample(text, "chat_tokens_total") >= 40  # counted by the worker, served by the web process
    assert sample(text, "chat_turns_ended_total", '{reason="complete"}') >= 1
    assert sample(text, "chat_cancel_seconds_count") >= 1
    assert sample(text, "chat_send_seconds_count") >= 2
    assert sample(text, "chat_worker_heartbeats_total") >= 1
    assert sample(text, "chat_websocket_connections") == 1
    assert sample(text, "chat_errors_total", '{code="not_found",edge="http"}') >= 1
    assert sample(text, "chat_workers_alive") == 1
    assert 'chat_turns{status="active"}' in text and 'chat_turns{status="queued"}' in text  # from the database
    assert sample(text, "chat_turns_streaming") == 0


async def test_without_a_metrics_directory_each_process_serves_its_own(fault_stack, login):
    port = free_port()
    stack = fault_stack(env={"CHAT_WORKER_METRICS_PORT": str(port)})
    alice = await login(stack.base_url, "alice")
    session = await session_with(alice, tokens=30, rate=300)
    device = await alice.connect(session["id"])
    await settled(device, (await device.send("one process each")).turn_id)
    async with httpx.AsyncClient() as http:
        worker = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        web = (await http.get(f"{stack.base_url}/metrics")).text
    assert sample(worker, "chat_tokens_total") >= 30 and sample(worker, "chat_worker_heartbeats_total") >= 1
    assert sample(web, "chat_tokens_total") == 0  # the web process streams no tokens itself
    assert sample(web, "chat_send_seconds_count") >= 1 and sample(web, "chat_websocket_connections") == 1
