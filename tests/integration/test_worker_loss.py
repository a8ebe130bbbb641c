"""A turn whose worker dies ends with error `worker_lost`, seen by every device, within a
bounded wait once any worker runs (its reaper's), and is not run twice."""

from __future__ import annotations

from chat_client import ChatClient
from tests.conftest import PASSWORD
from tests.integration.helpers import assert_clean


async def test_a_turn_whose_worker_dies_ends_with_worker_lost(stack_factory, create_user):
    stack = stack_factory()  # its own worker, which this test kills
    username = create_user("alice")
    alice = await ChatClient.login(stack.base_url, username, PASSWORD)
    try:
        session = await alice.create_session(model_options={"tokens": 1000, "rate": 50})
        device = await alice.connect(session["id"])
        turn = await device.send("doomed")
        await device.wait_for(lambda: device.text_of(turn.ack["assistantMessageId"]).count(" ") >= 5)

        stack.kill("worker")
        streamed_before = device.text_of(turn.ack["assistantMessageId"])
        stack.start_worker("worker-2")
        end = await turn.end(timeout=30)  # the new worker's reaper ends it (bounded wait, no figure)

        assert end["reason"] == "error" and end["error"]["code"] == "worker_lost"
        detail = await alice.turn(session["id"], turn.turn_id)
        assert detail["status"] == "error"
        assert detail["content"].startswith(streamed_before) and len(detail["content"]) < 1000
        deltas_after_end = [e for e in device.events if e["type"] == "delta" and e["seq"] > end["seq"]]
        assert deltas_after_end == []  # not run a second time
        again = await device.send("the new worker runs new turns")
        assert (await again.end(timeout=30))["reason"] == "complete"
        assert_clean(device)
    finally:
        await alice.aclose()
