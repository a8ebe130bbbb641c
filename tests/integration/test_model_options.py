"""Options the session's model refuses are refused where they are set, over HTTP: 400
`invalid`, naming the option, and nothing changes."""

from __future__ import annotations

import pytest

from chat_client import ChatClientError


async def test_bad_model_options_are_refused_at_create_and_update(make_client):
    alice = await make_client("alice")
    with pytest.raises(ChatClientError) as created:
        await alice.create_session(title="bad", model_options={"rate": "fast"})
    assert (created.value.status, created.value.code) == (400, "invalid")
    assert "rate" in created.value.message
    assert (await alice.request("GET", "/api/sessions"))["results"] == []

    session = await alice.create_session(title="good", model_options={"tokens": 3})
    with pytest.raises(ChatClientError) as updated:
        await alice.request("PATCH", f"/api/sessions/{session['id']}", json={"modelOptions": {"failAfter": "x"}})
    assert (updated.value.status, updated.value.code) == (400, "invalid")
    assert "failAfter" in updated.value.message
    assert (await alice.session(session["id"]))["modelOptions"] == {"tokens": 3}
