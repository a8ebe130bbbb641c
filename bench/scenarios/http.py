"""The HTTP path, as integrations meet it: a trivial authenticated GET, session create, send
accepted, send -> first token, 100 sends released together (then their 100 turns cancelled
together), the cancel call and cancel -> `turn.end` at a device (streaming and silent),
interrupt -> the new turn's first token, and requests per second of the one Daphne process
for GETs and for sends (50 clients).

A device (websocket) watches the session, as a page would, for the token and end figures.
Latencies are taken with a lean keep-alive client (bench/http_client.py: its own cost is
tens of microseconds a request, so the figures are the server's); requests per second are
driven by `wrk` where it is installed (a C client, so that the client's own CPU is small
beside the server's), else by 50 connections of that client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness import (
    WORKLOAD,
    BenchDevice,
    BenchStack,
    close_all,
    connect,
    ms,
    new_prompt,
    new_sessions,
    percentile,
)
from bench.http_client import LeanHttp
from bench.scenarios import Figure, Measured, Scenario, at_least, at_most
from bench.scenarios.cancel import SILENT, tokens_seen

MODEL_DELAY_MS = 1000 / WORKLOAD["rate"]  # the demo model's own delay before its first token


def figures(quick: bool) -> list[Figure]:
    return [
        Figure("http_get_p50", "trivial authenticated GET p50", "ms", "<= 1.5 ms", at_most(1.5)),
        Figure("http_get_rps", "GETs per second, one Daphne process, 50 clients", "req/s", ">= 1,500", at_least(1500)),
        Figure("http_send_rps", "sends per second, one Daphne process, 50 clients", "req/s"),
        Figure("http_session_create_p50", "create a session p50", "ms"),
        Figure("http_send_p50", "HTTP send accepted p50, alone", "ms", "<= 3 ms", at_most(3)),
        Figure(
            "http_first_token_p50", "HTTP send -> first token p50 (less the model's delay)", "ms", "<= 8 ms", at_most(8)
        ),
        Figure("http_burst_accept_p99", "100 HTTP sends together: accepted p99", "ms", "<= 100 ms", at_most(100)),
        Figure(
            "http_burst_first_token_p99", "100 HTTP sends together: first token p99", "ms", "<= 150 ms", at_most(150)
        ),
        Figure("http_burst_cancel_p99", "100 HTTP cancels together: answered p99", "ms"),
        Figure("http_burst_cancel_end_p99", "100 HTTP cancels together: turn.end p99", "ms"),
        Figure("http_cancel_call_p50", "HTTP cancel round trip p50", "ms", "<= 3 ms", at_most(3)),
        Figure("http_cancel_p50:flowing", "HTTP cancel -> turn.end p50, flowing", "ms", "<= 5 ms", at_most(5)),
        Figure("http_cancel_p99:flowing", "HTTP cancel -> turn.end p99, flowing", "ms", "<= 10 ms", at_most(10)),
        Figure("http_cancel_p50:silent", "HTTP cancel -> turn.end p50, silent", "ms", "<= 5 ms", at_most(5)),
        Figure("http_cancel_p99:silent", "HTTP cancel -> turn.end p99, silent", "ms", "<= 10 ms", at_most(10)),
        Figure(
            "http_interrupt_first_token_p50",
            "interrupt: new turn's first token p50 (cancel included, less the model's delay)",
            "ms",
            "<= 15 ms",
            at_most(15),
        ),
    ]


class Api:
    """The HTTP API with one user's token, over one pool of keep-alive connections."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url, self.token = base_url, token
        self.http = LeanHttp(base_url, {"Authorization": f"Token {token}"})

    async def call(self, method: str, path: str, body: Any = None) -> tuple[float, Any]:
        """(seconds, JSON answer) of one request; raises on an error status."""
        return await self.http.request(method, path, body)

    def send_body(self, prompt: str, **extra: Any) -> dict[str, Any]:
        return {
            "messages": [{"id": str(uuid.uuid4()), "role": "user", "parts": [{"type": "text", "text": prompt}]}]
        } | extra


def has_tokens(device: BenchDevice, turn_id: str, count: int) -> bool:
    return tokens_seen(device, turn_id) >= count


def first_delta_index(device: BenchDevice, turn_id: str, start: int = 0) -> int | None:
    for index in range(start, len(device.events)):
        event = device.events[index]
        if event["type"] == "delta" and event.get("turnId") == turn_id:
            return index
    return None


async def run(bench: BenchStack, quick: bool) -> Measured:
    measured = Measured()
    client = (await bench.login())[0]
    assert client.token is not None
    api = Api(bench.base_url, client.token)
    try:
        await _get_and_create(api, measured, 100 if quick else 400)
        await _sends(api, client, measured, 10 if quick else 40)
        await _burst(api, client, measured)
        await _cancels(api, client, measured, 10 if quick else 25)
        await _interrupts(api, client, measured, 10 if quick else 25)
        await _throughput(bench, api, client, measured, 3 if quick else 8)
    finally:
        await api.http.aclose()
    return measured


async def _get_and_create(api: Api, measured: Measured, samples: int) -> None:
    """The GET's latency as one wrk connection sees it where wrk is installed (a C client:
    the figure is the server's), and as the lean Python client sees it."""
    gets = [ms((await api.call("GET", "/api/models"))[0]) for _ in range(samples)]
    creates = [
        ms((await api.call("POST", "/api/sessions", {"title": "h", "modelOptions": WORKLOAD}))[0])
        for _ in range(max(samples // 10, 10))
    ]
    measured.figures["http_get_p50"] = percentile(gets, 50)
    if shutil.which("wrk"):
        _, measured.figures["http_get_p50"] = await asyncio.to_thread(
            run_wrk, api.base_url.rstrip("/"), api.token, "GET", ["/api/models"], None, 3, 1
        )
    measured.figures["http_session_create_p50"] = percentile(creates, 50)
    measured.details["get"] = {
        "samples": samples,
        "client": "wrk, one connection" if shutil.which("wrk") else "lean Python client",
        "python_client_p50_ms": percentile(gets, 50),
        "python_client_p99_ms": percentile(gets, 99),
    }
    measured.details["session_create"] = {"p99_ms": percentile(creates, 99)}


async def _sends(api: Api, client: Any, measured: Measured, samples: int) -> None:
    """One turn at a time: accepted, and its first token at the device."""
    [session] = await new_sessions(client, 1)
    [device] = await connect(client, [session])
    accepted, firsts = [], []
    try:
        for i in range(samples):
            start = len(device.events)
            sent_at = time.time()
            elapsed, answer = await api.call(
                "POST", f"/api/sessions/{session}/turns", api.send_body(new_prompt(f"h{i}"))
            )
            accepted.append(ms(elapsed))
            turn_id = answer["turnId"]
            index = await device.wait_for(partial(first_delta_index, device, turn_id, start), 30)
            firsts.append(ms(device.receive_times[index] - sent_at) - MODEL_DELAY_MS)
            await api.call("POST", f"/api/sessions/{session}/cancel", {"turnId": turn_id})
            await device.wait_turn_end(turn_id, 30)
    finally:
        await close_all([device])
    measured.figures["http_send_p50"] = percentile(accepted, 50)
    measured.figures["http_first_token_p50"] = percentile(firsts, 50)
    measured.details["send"] = {"samples": samples, "accepted_p99_ms": percentile(accepted, 99)}
    measured.details["first_token"] = {"p99_ms": percentile(firsts, 99)}


async def _burst(api: Api, client: Any, measured: Measured, turns: int = 100) -> None:
    """100 sends to 100 sessions released together; each session's device times its token.
    Then the 100 turns are cancelled together (each over its own connection, as 100
    clients stopping at once): the cancel's answer, and its `turn.end` at the device.
    The client has a connection open for each (a client's pool, warm), so that the figure
    is the server's deciding of the burst, not 100 TCP handshakes."""
    sessions = await new_sessions(client, turns)
    devices = await connect(client, sessions)
    await api.http.connections(turns)
    try:
        release = asyncio.Event()

        async def one(session: str, device: BenchDevice) -> tuple[float, float, str]:
            body = api.send_body(new_prompt("burst"))
            await release.wait()
            sent_at = time.time()
            elapsed, answer = await api.call("POST", f"/api/sessions/{session}/turns", body)
            turn_id = answer["turnId"]
            index = await device.wait_for(partial(first_delta_index, device, turn_id), 60)
            return ms(elapsed), ms(device.receive_times[index] - sent_at) - MODEL_DELAY_MS, turn_id

        tasks = [asyncio.create_task(one(s, d)) for s, d in zip(sessions, devices, strict=True)]
        await asyncio.sleep(0.2)  # every request built and waiting on the release
        release.set()
        results = await asyncio.gather(*tasks)
        stop = asyncio.Event()

        async def cancel(session: str, device: BenchDevice, turn_id: str) -> tuple[float, float]:
            await stop.wait()
            cancelled_at = time.time()
            elapsed, _ = await api.call("POST", f"/api/sessions/{session}/cancel", {"turnId": turn_id})
            end = await device.wait_turn_end(turn_id, 60)
            index = device.index_of(end)
            return ms(elapsed), ms(device.receive_times[index] - cancelled_at)

        cancels = [asyncio.create_task(cancel(s, d, r[2])) for s, d, r in zip(sessions, devices, results, strict=True)]
        await asyncio.sleep(0.1)
        stop.set()
        stopped = await asyncio.gather(*cancels)
    finally:
        await close_all(devices)
    accepted, firsts = [r[0] for r in results], [r[1] for r in results]
    measured.figures["http_burst_accept_p99"] = percentile(accepted, 99)
    measured.figures["http_burst_first_token_p99"] = percentile(firsts, 99)
    measured.figures["http_burst_cancel_p99"] = percentile([c[0] for c in stopped], 99)
    measured.figures["http_burst_cancel_end_p99"] = percentile([c[1] for c in stopped], 99)
    measured.details["burst"] = {
        "turns": turns,
        "accept_p50_ms": percentile(accepted, 50),
        "cancel_p50_ms": percentile([c[0] for c in stopped], 50),
        "cancel_end_p50_ms": percentile([c[1] for c in stopped], 50),
    }


async def _cancels(api: Api, client: Any, measured: Measured, samples: int) -> None:
    calls: list[float] = []
    for mode, options, after_tokens, settle in (("flowing", WORKLOAD, 10, 0.0), ("silent", SILENT, 5, 0.1)):
        [session] = await new_sessions(client, 1, options)
        [device] = await connect(client, [session])
        latencies = []
        try:
            for i in range(samples):
                _, answer = await api.call(
                    "POST", f"/api/sessions/{session}/turns", api.send_body(new_prompt(f"c-{mode}-{i}"))
                )
                turn_id = answer["turnId"]
                await device.wait_for(partial(has_tokens, device, turn_id, after_tokens), 30)
                if settle:
                    await asyncio.sleep(settle)
                cancelled_at = time.time()
                elapsed, _ = await api.call("POST", f"/api/sessions/{session}/cancel", {"turnId": turn_id})
                calls.append(ms(elapsed))
                end = await device.wait_turn_end(turn_id, 30)
                index = device.index_of(end)
                latencies.append(ms(device.receive_times[index] - cancelled_at))
                if end["reason"] != "cancelled":
                    measured.problems.append(f"http cancel ({mode}): turn ended {end['reason']}")
        finally:
            await close_all([device])
        measured.figures[f"http_cancel_p50:{mode}"] = percentile(latencies, 50)
        measured.figures[f"http_cancel_p99:{mode}"] = percentile(latencies, 99)
    measured.figures["http_cancel_call_p50"] = percentile(calls, 50)


async def _interrupts(api: Api, client: Any, measured: Measured, samples: int) -> None:
    """A streaming turn, then a send with `policy: "interrupt"`: the new turn's first token,
    and that every device saw the old turn's end before the new turn's start."""
    [session] = await new_sessions(client, 1)
    [device] = await connect(client, [session])
    firsts: list[float] = []
    out_of_order = 0
    try:
        _, answer = await api.call("POST", f"/api/sessions/{session}/turns", api.send_body(new_prompt("i-first")))
        previous = answer["turnId"]
        for i in range(samples):
            await device.wait_for(partial(has_tokens, device, previous, 3), 30)
            start = len(device.events)
            sent_at = time.time()
            _, answer = await api.call(
                "POST",
                f"/api/sessions/{session}/turns",
                api.send_body(new_prompt(f"i{i}"), policy="interrupt"),
            )
            new = answer["turnId"]
            index = await device.wait_for(partial(first_delta_index, device, new, start), 30)
            firsts.append(ms(device.receive_times[index] - sent_at) - MODEL_DELAY_MS)
            kinds = [(e["type"], e.get("turnId")) for e in device.events[start:index]]
            if ("turn.end", previous) not in kinds or kinds.index(("turn.end", previous)) > kinds.index(
                ("turn.start", new)
            ):
                out_of_order += 1
            previous = new
        await api.call("POST", f"/api/sessions/{session}/cancel", {"all": True})
    finally:
        await close_all([device])
    measured.figures["http_interrupt_first_token_p50"] = percentile(firsts, 50)
    measured.details["interrupt"] = {"samples": samples, "p99_ms": percentile(firsts, 99), "out_of_order": out_of_order}
    if out_of_order:
        measured.problems.append(f"interrupt: {out_of_order} new turn.start before the interrupted turn.end")


async def _throughput(bench: BenchStack, api: Api, client: Any, measured: Measured, seconds: int) -> None:
    """Requests per second of the one Daphne process, 50 clients: GETs, then sends to 50
    sessions (each send starts a short turn: 5 tokens, unpaced; one session per client, so
    that no session's cap on active turns or queue refuses any)."""
    measured.figures["http_get_rps"] = await _rate(bench.base_url, api.token, "GET", ["/api/models"], None, seconds)
    sessions = await new_sessions(client, CLIENTS, {"tokens": 5, "rate": 100_000})
    body = api.send_body("rps")
    paths = [f"/api/sessions/{session}/turns" for session in sessions]
    measured.figures["http_send_rps"] = await _rate(bench.base_url, api.token, "POST", paths, body, seconds)
    for session in sessions:
        with contextlib.suppress(Exception):
            await api.call("POST", f"/api/sessions/{session}/cancel", {"all": True})


CLIENTS = 50


async def _rate(base_url: str, token: str, method: str, paths: list[str], body: Any, seconds: int) -> float:
    if shutil.which("wrk"):
        return (await asyncio.to_thread(run_wrk, base_url, token, method, paths, body, seconds))[0]
    return await _client_rate(base_url, token, method, paths, body, seconds)


_WRK_SCRIPT = """
wrk.method = "{method}"
wrk.headers["Authorization"] = "Token {token}"
wrk.headers["Content-Type"] = "application/json"
local paths = {{{paths}}}
local body = {body}
local n = 0
-- Each wrk thread has a Lua state of its own, with the same random sequence: a thread
-- number keeps the threads' message ids (and their first paths) apart.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("number", threads)
end
function init(args)
  n = number * 7919
end
request = function()
  n = n + 1
  local path = paths[(n % #paths) + 1]
  if body == nil then return wrk.format(nil, path) end
  local id = string.format("rps-%d-%d-%d", number, n, os.time())
  return wrk.format(nil, path, nil, string.format(body, id))
end
"""


def run_wrk(
    base_url: str, token: str, method: str, paths: list[str], body: Any, seconds: int, clients: int = CLIENTS
) -> tuple[float, float]:
    """(requests per second, latency p50 in ms) of `clients` connections for `seconds`."""
    lua_body = "nil"
    if body is not None:
        # The message id is filled per request (%s), each send being a new message.
        with_id = json.loads(json.dumps(body))
        with_id["messages"][0]["id"] = "__ID__"
        template = json.dumps(with_id).replace("%", "%%").replace("__ID__", "%s")
        lua_body = "[[" + template + "]]"
    lua_paths = ", ".join(f'"{path}"' for path in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT.format(method=method, token=token, paths=lua_paths, body=lua_body))
    try:
        command = ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", script.name]
        out = subprocess.run(
            [*command, f"{base_url}{paths[0]}"],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        Path(script.name).unlink(missing_ok=True)
    non_2xx = next((line for line in out.splitlines() if "Non-2xx" in line), "")
    if non_2xx:
        raise RuntimeError(f"wrk: {non_2xx.strip()}")
    rate = next(line for line in out.splitlines() if line.startswith("Requests/sec:"))
    median = next(line.split()[1] for line in out.splitlines() if line.strip().startswith("50%"))
    return float(rate.split(":")[1]), _wrk_ms(median)


def _wrk_ms(value: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if value.endswith(unit):
            return float(value.removesuffix(unit)) * factor
    raise ValueError(f"wrk latency {value!r}")


async def _client_rate(base_url: str, token: str, method: str, paths: list[str], body: Any, seconds: int) -> float:
    until = time.perf_counter() + seconds
    done = 0
    http = LeanHttp(base_url, {"Authorization": f"Token {token}"})

    async def worker(path: str) -> None:
        nonlocal done
        while time.perf_counter() < until:
            payload = None
            if body is not None:
                payload = json.loads(json.dumps(body))
                payload["messages"][0]["id"] = str(uuid.uuid4())
            await http.request(method, path, payload)
            done += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(paths[i % len(paths)]) for i in range(CLIENTS)))
        return done / (time.perf_counter() - started)
    finally:
        await http.aclose()


SCENARIO = Scenario("http", "The HTTP API", figures, run)
