"""A stock `@ably/ai-transport` 0.8 client (Vercel codec, ably-js) reads a session our
server mirrored, live and from history, and its `session.cancel(runId)` stops our turn.

The client runs under node (tests/ably/node/stock_client.mjs, packages from the committed
package-lock.json: `npm ci` in tests/ably/node, which .ci/run and `make test` do). Without
node the test is skipped locally; in CI (CI=true) a missing node fails it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ably.fake_ably import FakeAblyThread
from tests.ably.helpers import channel_of
from tests.integration.helpers import expected_answer
from tests.stack import Stack

NODE_DIR = Path(__file__).parent / "node"


def node_or_skip() -> str:
    """node 20 or newer (what @ably/ai-transport's code needs), with the packages installed."""
    node = shutil.which("node")
    in_ci = os.environ.get("CI", "").lower() == "true"
    if node is None:
        if in_ci:
            pytest.fail("node is required in CI (installed by .ci/run)")
        pytest.skip("node is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        (pytest.fail if in_ci else pytest.skip)(f"node {version}: the stock client needs node 20 or newer")
    if not (NODE_DIR / "node_modules" / "@ably" / "ai-transport").is_dir():
        pytest.fail("run `npm ci` in tests/ably/node (make test does)")
    return node


async def test_a_stock_client_follows_cancels_and_rebuilds_a_mirrored_session(
    ably_client: Any, ably_stack: Stack, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    node = node_or_skip()
    alice, bob = await ably_client("alice"), await ably_client("bob")
    session = await alice.create_session(title="stock client", model_options={"tokens": 40, "rate": 40})
    await alice.add_member(session["id"], bob.client_id)
    env = {
        **os.environ,
        "CHAT_URL": ably_stack.base_url,
        "SESSION_ID": session["id"],
        "ALICE_TOKEN": alice.token,
        "BOB_TOKEN": bob.token,
        "ABLY_HOST": "127.0.0.1",
        "ABLY_PORT": str(fake_ably.port),
        "CHANNEL": channel_of(session["id"]),
    }
    process = await asyncio.create_subprocess_exec(
        node, "stock_client.mjs", cwd=NODE_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, stderr.decode()[-4000:]
    seen = json.loads(stdout.decode().strip().splitlines()[-1])
    first, second, third = (seen["turns"][k] for k in ("first", "second", "third"))

    # Live: the three exchanges on one branch, the first answer whole, as streamed.
    live = seen["live"]
    assert [(m["role"], m["codecMessageId"]) for m in live["messages"]] == [
        ("user", first["userMessageId"]),
        ("assistant", first["assistantMessageId"]),
        ("user", second["userMessageId"]),
        ("assistant", second["assistantMessageId"]),
        ("user", third["userMessageId"]),
        ("assistant", third["assistantMessageId"]),
    ]
    texts = [m["text"] for m in live["messages"]]
    assert texts[0] == "first prompt"
    assert texts[1] == expected_answer("first prompt", 40)
    assert seen["firstGrowth"] >= 2  # it grew in the view, append after append, as it streamed
    assert texts[2] == "second prompt"
    assert 0 < len(texts[3]) < len(expected_answer("second prompt", 40))
    assert expected_answer("second prompt", 40).startswith(texts[3])
    assert texts[5] == expected_answer("third prompt", 3)

    runs = {run["runId"]: run for run in live["runs"]}
    assert runs[first["turnId"]]["status"] == "complete"
    assert runs[first["turnId"]]["clientId"] == alice.client_id
    assert runs[second["turnId"]]["status"] == "cancelled"
    assert runs[third["turnId"]]["status"] == "error"
    assert runs[third["turnId"]]["error"]["code"] == 50301  # provider_unavailable
    assert "failAfter" in runs[third["turnId"]]["error"]["message"]

    # The stock cancel stopped our turn: the server ended it cancelled, with what it streamed.
    assert seen["secondTurn"]["status"] == "cancelled"
    assert seen["secondTurn"]["cancelledBy"] == alice.client_id  # the identity Ably verified
    assert seen["secondTurn"]["content"] == texts[3]
    assert seen["errors"] == [runs[third["turnId"]]["error"]]  # the session's error event, once

    # A member joining late rebuilds the same conversation from history.
    assert seen["late"]["messages"] == live["messages"]
    assert [(r["runId"], r["status"]) for r in seen["late"]["runs"]] == [
        (r["runId"], r["status"]) for r in live["runs"]
    ]
    assert seen["clientIds"] == {"alice": alice.client_id, "bob": bob.client_id}


async def test_a_stock_client_drives_a_turn_through_its_invocation(
    ably_client: Any, ably_stack: Stack, fake_ably: FakeAblyThread, mirror: Any
) -> None:
    """An AI Transport front end, unchanged, in front of our server: its user message goes
    on the channel, its Invocation POST runs it as a turn, and its run follows our answer."""
    node = node_or_skip()
    alice = await ably_client("alice")
    session = await alice.create_session(title="driven", model_options={"tokens": 20, "rate": 100})
    env = {
        **os.environ,
        "CHAT_URL": ably_stack.base_url,
        "SESSION_ID": session["id"],
        "ALICE_TOKEN": alice.token,
        "ABLY_HOST": "127.0.0.1",
        "ABLY_PORT": str(fake_ably.port),
        "CHANNEL": channel_of(session["id"]),
    }
    process = await asyncio.create_subprocess_exec(
        node, "stock_driver.mjs", cwd=NODE_DIR, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()[-4000:]
    seen = json.loads(stdout.decode().strip().splitlines()[-1])

    assert seen["invoked"]["status"] == 202
    assert seen["invoked"]["body"]["runId"] == seen["runId"] == seen["invoked"]["body"]["turnId"]
    assert seen["status"] == "complete"
    # The turn on our server is the client's message, under the client's ids.
    turn = await alice.turn(session["id"], seen["runId"])
    assert turn["userMessageId"] == seen["inputCodecMessageId"]
    assert turn["clientId"] == alice.client_id
    assert turn["content"] == expected_answer("driven from ably", 20)
    # The client sees its message once (the mirror did not publish it again) and our answer.
    assert seen["messages"] == [
        {"codecMessageId": seen["inputCodecMessageId"], "role": "user", "text": "driven from ably"},
        {"codecMessageId": turn["assistantMessageId"], "role": "assistant", "text": turn["content"]},
    ]
    inputs = [m for m in fake_ably.messages(channel_of(session["id"])) if m["name"] == "ai-input"]
    assert [m["clientId"] for m in inputs] == [alice.client_id]
    assert seen["missing"]["status"] == 404
    assert seen["missing"]["body"]["error"]["code"] == "not_found"
