"""The command schemas' strictness (sessions_app/schemas.py), shared by HTTP and the
websocket: no NUL character, no coercion, no null filter keys, unique message ids, no parent
with forkOf from a client. The same over the real stack: tests/integration/test_api_input_strictness.py."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from sessions_app.schemas import CancelFilter, SendBody, SendCommand, WaitBody, WsCancel, WsClose, WsPing, WsSend


def send(text: str = "x", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}


@pytest.mark.parametrize(
    ("schema", "raw"),
    [
        (WsSend, {"type": "send", **send("a\u0000")}),
        (WsSend, {"type": "send", **send(), "ref": "\u0000"}),
        (WsCancel, {"type": "cancel", "filter": {"clientId": "\u0000"}}),
        (WsClose, {"type": "close", "cancel": {"turnId": "t\u0000"}}),
        (WsPing, {"type": "ping", "ref": {"k\u0000": 1}}),
        (SendBody, send("a\u0000")),  # the server's own callers too (agents, Ably inputs)
    ],
)
def test_commands_holding_a_nul_character_are_refused(schema, raw):
    with pytest.raises(ValidationError, match="NUL"):
        schema.model_validate(raw)


@pytest.mark.parametrize("raw", [{"turnId": None}, {"own": None}, {"all": None}, {"clientId": None, "all": None}])
def test_a_filter_key_given_as_null_is_refused(raw):
    with pytest.raises(ValidationError, match="may not be null"):
        CancelFilter.model_validate(raw)
    with pytest.raises(ValidationError):
        WaitBody.model_validate({"filter": raw})
    assert CancelFilter.model_validate({}).as_dict() == {"own": True}  # absent still means own


@pytest.mark.parametrize(
    ("schema", "raw"),
    [
        (CancelFilter, {"all": 1}),
        (CancelFilter, {"own": 1.0}),
        (CancelFilter, {"all": "true"}),
        (WaitBody, {"timeout": "5"}),
        (WaitBody, {"timeout": True}),
        (SendBody, send(turnId=5)),
        (SendBody, send(policy=1)),
    ],
)
def test_values_are_not_coerced(schema, raw):
    with pytest.raises(ValidationError):
        schema.model_validate(raw)


def test_what_the_types_allow_still_validates():
    assert WaitBody.model_validate({"timeout": 5}).timeout == 5.0
    assert SendBody.model_validate(send(policy="queue")).policy == "queue"
    assert CancelFilter.model_validate({"all": True}).as_dict() == {"all": True}


def test_message_ids_are_unique_within_a_send():
    twice = {"messages": send()["messages"] * 2}
    with pytest.raises(ValidationError, match="repeated"):
        SendBody.model_validate(twice)


def test_a_clients_edit_names_no_parent_but_an_ably_input_may():
    edit = send(forkOf="u1", parent="p1")
    with pytest.raises(ValidationError, match="forkOf"):
        SendCommand.model_validate(edit)
    with pytest.raises(ValidationError, match="forkOf"):
        WsSend.model_validate({"type": "send", **edit})
    # An Ably client's input names the edited message's parent too (ably/invocations.py).
    assert SendBody.model_validate(edit).fork_of == "u1"


def test_a_ref_refused_for_a_nul_character_is_not_echoed():
    from sessions_app.schemas import echoable_ref

    assert echoable_ref({"k": [1, "x"]}) == {"k": [1, "x"]}
    assert echoable_ref("a\u0000") is None
    assert echoable_ref({"k\u0000": 1}) is None
    assert echoable_ref([[[[[[[[[["deep"]]]]]]]]]]) is None


def test_a_refusal_of_ours_reads_in_its_own_words():
    """Not prefixed with pydantic's "Value error, " (over HTTP and the websocket alike)."""
    from sessions_app.web.api.app import _validation_message
    from sessions_app.web.errors import validation_message

    with pytest.raises(ValidationError) as refused:
        SendCommand.model_validate(send(forkOf="m", parent="p"))
    for message in (validation_message(refused.value), _validation_message([dict(e) for e in refused.value.errors()])):
        assert "forkOf" in message and "Value error" not in message, message
