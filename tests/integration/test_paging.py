"""Paging parameters as docs/protocol.md gives them ("Paging and waiting"): a messages page
and an events page walk the whole session, and a value out of its range is refused, never
clamped. Against the real stack."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.helpers import session_with


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_pages_of_messages_and_events_walk_the_whole_session(make_client, stack):
    alice = await make_client("alice")
    sid = (await session_with(alice, tokens=3))["id"]
    device = await alice.connect(sid)
    for i in range(3):
        answer = await alice.send(sid, f"question {i}")
        await device.wait_turn_end(answer["turnId"])
    seen: list[str] = []
    before: str | None = None
    while True:
        page = await alice.messages(sid, before=before, limit=2)
        assert len(page["results"]) <= 2
        seen.extend(node["id"] for node in page["results"])
        before = page["next"]
        if before is None:
            break
    assert len(seen) == 6 and len(set(seen)) == 6  # three questions, three answers, each once
    events: list[dict] = []
    after = 0
    while True:
        response = await alice.http.get(f"/api/sessions/{sid}/events", params={"after": after, "limit": 4})
        body = response.json()
        events.extend(body["events"])
        if not body["events"]:
            break
        after = body["events"][-1]["seq"]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert seqs[-1] == body["lastSeq"]
    await device.close()


async def test_paging_values_out_of_range_are_invalid_and_an_unknown_cursor_not_found(make_client, stack):
    alice = await make_client("alice")
    sid = (await session_with(alice))["id"]
    cases: list[tuple[str, dict[str, Any]]] = [
        ("messages", {"limit": 0}),
        ("messages", {"limit": 501}),
        ("messages", {"limit": "ten"}),
        ("events", {"limit": 0}),
        ("events", {"limit": 5001}),
        ("events", {"after": -1}),
        ("events", {"after": "1.5"}),
        # What int() would read, and the websocket's `?after=` refuses.
        *[("events", {"after": written}) for written in ("5_0", "+5", " 5", "5 ", "\t5", "5.0", "٥")],
        *[("messages", {"limit": written}) for written in ("5_0", "+5", "5.0", "")],
        ("events", {"after": "9" * 40}),
        ("turns", {"status": "running"}),
    ]
    for path, params in cases:
        response = await alice.http.get(f"/api/sessions/{sid}/{path}", params=params)
        assert error_of(response) == (400, "invalid"), (path, params, response.text)
        if "limit" in params or "after" in params:
            assert "whole number" in response.json()["error"]["message"], response.text
    assert (await alice.http.get(f"/api/sessions/{sid}/messages", params={"limit": 500})).status_code == 200
    assert (await alice.http.get(f"/api/sessions/{sid}/events", params={"limit": 5000})).status_code == 200
    assert (await alice.http.get(f"/api/sessions/{sid}/turns", params={"status": ""})).status_code == 200
    response = await alice.http.get(f"/api/sessions/{sid}/messages", params={"before": "no-such-message"})
    assert error_of(response) == (404, "not_found")


async def test_the_owner_cannot_leave_their_own_session(make_client, stack):
    alice = await make_client("alice")
    sid = (await session_with(alice))["id"]
    response = await alice.http.delete(f"/api/sessions/{sid}/members")
    assert error_of(response) == (400, "invalid")
    assert (await alice.http.get(f"/api/sessions/{sid}")).status_code == 200
