"""Input the API must refuse as `invalid` (400 over HTTP, an error frame over the websocket)
rather than store, coerce or misread: NUL characters anywhere, filter keys given as null,
values of the wrong JSON type, unknown login fields, repeated message ids, an edit naming a
parent. Also: a missing body where every field is optional, the OpenAPI schema naming the
fields the server sends, and other methods on the schema's paths. Against the real stack."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from chat_client import ChatClient
from tests.conftest import PASSWORD
from tests.integration.helpers import session_with

SLOW = {"tokens": 400, "rate": 40}  # ten seconds of streaming: the turn is active throughout


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


def message(text: str, message_id: str = "m1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


async def errors_for(device: Any, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The error frames answering `frames`, sent raw with refs r0, r1, ... (in order)."""
    before = len(device.errors)
    for index, frame in enumerate(frames):
        await device.send_raw(orjson.dumps({**frame, "ref": f"r{index}"}).decode())
    await device.wait_for(lambda: len(device.errors) >= before + len(frames))
    return sorted(device.errors[before:], key=lambda e: int(e["ref"][1:]))


async def active_turn(client: ChatClient, session_id: str) -> str:
    """A turn of `client`'s that streams for seconds (the session streams SLOW)."""
    answer = await client.send(session_id, "a long one")
    return str(answer["turnId"])


async def streaming_with_a_device(client: ChatClient) -> tuple[str, str, Any]:
    """A SLOW session of `client`'s, a turn of theirs streaming in it, and a device on it."""
    sid = (await session_with(client, **SLOW))["id"]
    turn_id = await active_turn(client, sid)
    return sid, turn_id, await client.connect(sid)


# --- NUL characters -----------------------------------------------------------------------


async def test_nul_characters_are_invalid_in_every_http_input(make_client, stack):
    alice, bob = await make_client("alice"), await make_client("bob")
    session = await session_with(alice)
    sid = session["id"]
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/api/sessions", {"title": "a\u0000b"}),
        ("POST", "/api/sessions", {"modelOptions": {"k": "v\u0000"}}),
        ("POST", "/api/sessions", {"modelOptions": {"k\u0000": 1}}),
        ("POST", "/api/sessions", {"modelOptions": {"deep": [{"x": ["\u0000"]}]}}),
        ("PATCH", f"/api/sessions/{sid}", {"title": "\u0000"}),
        ("POST", f"/api/sessions/{sid}/members", {"username": f"{bob.client_id}\u0000"}),
        ("POST", f"/api/sessions/{sid}/turns", {"messages": [message("hello\u0000")]}),
        ("POST", f"/api/sessions/{sid}/cancel", {"clientId": "a\u0000"}),
        ("POST", f"/api/sessions/{sid}/wait", {"filter": {"clientId": "a\u0000"}, "timeout": 0}),
        ("POST", f"/api/sessions/{sid}/agents", {"name": "critic\u0000"}),
        # An endpoint whose body schema is not a command's: the body parser refuses it.
        ("POST", "/api/ably/invocations", {"inputEventId": "e\u0000", "sessionName": "x"}),
        ("GET", f"/api/sessions/{sid}/messages?before=%00", None),
        ("GET", f"/api/sessions/{sid}/turns?status=%00", None),
        ("GET", f"/api/sessions/{sid}/turns/%00", None),
        ("GET", f"/api/sessions/{sid}/turns/a%00b", None),
        ("DELETE", f"/api/sessions/{sid}/agents/x%00", None),
    ]
    for method, path, body in calls:
        response = await alice.http.request(method, path, json=body)
        assert error_of(response) == (400, "invalid"), (method, path, body, response.text)
        assert "NUL" in response.json()["error"]["message"], (method, path, response.text)
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        login = await anonymous.post("/api/auth/token", json={"username": "de\u0000mo", "password": PASSWORD})
    assert error_of(login) == (400, "invalid")

    assert [s["id"] for s in (await alice.request("GET", "/api/sessions"))["results"]] == [sid]
    assert (await alice.session(sid))["title"] == "test"
    assert (await alice.session(sid))["members"] == [alice.client_id]
    assert await alice.turns(sid) == []


async def test_nul_characters_are_invalid_in_websocket_commands(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])

    errors = await errors_for(
        device,
        [
            {"type": "send", "messages": [message("hello\u0000")]},
            {"type": "send", "messages": [message("hello")], "turnId": "t\u0000"},
            {"type": "cancel", "filter": {"clientId": "a\u0000"}},
            {"type": "close", "cancel": {"clientId": "\u0000"}},
            {"type": "ping", "x\u0000": 1},
        ],
    )

    assert [(e["code"], "NUL" in e["message"]) for e in errors] == [("invalid", True)] * 5
    assert (await device.ping())["type"] == "pong"
    assert await alice.turns(session["id"]) == []


# --- filters: an explicit null is no "absent" -------------------------------------------


async def test_a_filter_key_given_as_null_is_invalid_and_cancels_nothing(make_client):
    alice = await make_client("alice")
    sid, turn_id, device = await streaming_with_a_device(alice)
    nulls = [{"turnId": None}, {"clientId": None, "all": None}, {"own": None}, {"all": None}]

    for flt in nulls:
        cancel = await alice.http.post(f"/api/sessions/{sid}/cancel", json=flt)
        wait = await alice.http.post(f"/api/sessions/{sid}/wait", json={"filter": flt, "timeout": 0})
        assert error_of(cancel) == (400, "invalid"), (flt, cancel.text)
        assert "null" in cancel.json()["error"]["message"]
        assert error_of(wait) == (400, "invalid"), (flt, wait.text)
    errors = await errors_for(device, [{"type": "cancel", "filter": flt} for flt in nulls])

    assert [e["code"] for e in errors] == ["invalid"] * len(nulls)
    assert (await alice.turn(sid, turn_id))["status"] == "active"
    # `{}` and no body at all still mean own.
    assert (await alice.http.post(f"/api/sessions/{sid}/cancel")).json()["cancelled"] == [turn_id]


# --- strict types ------------------------------------------------------------------------


async def test_body_fields_take_their_json_type_only(make_client):
    alice = await make_client("alice")
    sid, turn_id, device = await streaming_with_a_device(alice)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("/api/auth/token/revoke", {"all": "yes"}),
        ("/api/auth/token/revoke", {"all": 1}),
        (f"/api/sessions/{sid}/cancel", {"all": 1}),
        (f"/api/sessions/{sid}/cancel", {"all": "true"}),
        (f"/api/sessions/{sid}/cancel", {"own": 1.0}),
        (f"/api/sessions/{sid}/wait", {"timeout": "5"}),
        (f"/api/sessions/{sid}/wait", {"timeout": True}),
        (f"/api/sessions/{sid}/wait", {"filter": {"all": 1}, "timeout": 0}),
        (f"/api/sessions/{sid}/turns", {"messages": [message("x")], "turnId": 5}),
        ("/api/sessions", {"title": 5}),
        ("/api/sessions", {"policy": 1}),
        (f"/api/sessions/{sid}/members", {"username": 5}),
    ]
    for path, body in calls:
        response = await alice.http.post(path, json=body)
        assert error_of(response) == (400, "invalid"), (path, body, response.text)
    errors = await errors_for(
        device, [{"type": "cancel", "filter": {"all": 1}}, {"type": "close", "cancel": {"own": "yes"}}]
    )

    assert [e["code"] for e in errors] == ["invalid", "invalid"]
    assert (await alice.turn(sid, turn_id))["status"] == "active"  # nothing cancelled, the token kept
    # What the types allow still works: a whole number of seconds, a policy's name.
    waited = await alice.http.post(f"/api/sessions/{sid}/wait", json={"filter": {"turnId": "nope"}, "timeout": 0})
    assert waited.status_code == 200, waited.text
    assert (await alice.create_session(policy="queue"))["policy"] == "queue"
    assert (await alice.cancel(sid, all=True))["cancelled"] == [turn_id]


async def test_login_refuses_unknown_fields(stack, create_user):
    username = create_user("login")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        extra = await http.post("/api/auth/token", json={"username": username, "password": PASSWORD, "x": 1})
        typed = await http.post("/api/auth/token", json={"username": username, "password": 12345678})
        plain = await http.post("/api/auth/token", json={"username": username, "password": PASSWORD})

    assert error_of(extra) == (400, "invalid") and "x" in extra.json()["error"]["message"]
    assert error_of(typed) == (400, "invalid")
    assert plain.status_code == 200


# --- sends -------------------------------------------------------------------------------


async def test_a_send_repeating_a_message_id_is_invalid(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    device = await alice.connect(session["id"])
    body = {"messages": [message("one", "same"), message("two", "same")]}

    response = await alice.http.post(f"/api/sessions/{session['id']}/turns", json=body)
    errors = await errors_for(device, [{"type": "send", **body}])

    assert error_of(response) == (400, "invalid"), response.text
    assert "same" in response.json()["error"]["message"]
    assert errors[0]["code"] == "invalid"
    assert await alice.turns(session["id"]) == []


async def test_an_edit_naming_a_parent_is_invalid(make_client):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=2)
    device = await alice.connect(session["id"])
    first = await device.send("question")
    await first.end()
    body = {"messages": [message("better", "m2")], "forkOf": first.ack["userMessageId"], "parent": "elsewhere"}

    response = await alice.http.post(f"/api/sessions/{session['id']}/turns", json=body)
    errors = await errors_for(device, [{"type": "send", **body}])

    assert error_of(response) == (400, "invalid"), response.text
    assert "forkOf" in response.json()["error"]["message"]
    assert errors[0]["code"] == "invalid"
    assert [t["turnId"] for t in await alice.turns(session["id"])] == [first.turn_id]


# --- bodies --------------------------------------------------------------------------------


async def test_a_missing_body_means_an_empty_object_where_every_field_is_optional(make_client):
    alice = await make_client("alice")
    session = await session_with(alice)
    sid = session["id"]

    created = await alice.http.post("/api/sessions")
    changed = await alice.http.patch(f"/api/sessions/{sid}")
    cancelled = await alice.http.post(f"/api/sessions/{sid}/cancel")
    waited = await alice.http.post(f"/api/sessions/{sid}/wait")  # own turns: none, so at once
    invite = await alice.http.post(f"/api/sessions/{sid}/members")
    send = await alice.http.post(f"/api/sessions/{sid}/turns")
    array = await alice.http.post("/api/sessions", json=[])

    assert created.status_code == 201 and created.json()["title"] == ""
    assert changed.status_code == 200 and changed.json()["title"] == "test"
    assert cancelled.json() == {"cancelled": [], "rejected": [], "pending": []}
    assert waited.json() == {"turns": [], "timedOut": False}
    assert (
        error_of(invite) == (400, "invalid") and invite.json()["error"]["message"] == "a JSON object body is required"
    )
    assert error_of(send) == (400, "invalid") and send.json()["error"]["message"] == "a JSON object body is required"
    assert error_of(array) == (400, "invalid") and array.json()["error"]["message"] == "the body must be a JSON object"


# --- the OpenAPI schema ------------------------------------------------------------------


def answer_schema(schema: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    found = schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    return component(schema, found)


def component(schema: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in found or "allOf" in found:
        found = found["allOf"][0] if "allOf" in found else found
        if "$ref" in found:
            found = schema["components"]["schemas"][found["$ref"].rsplit("/", 1)[1]]
    return found


async def test_the_schema_names_the_fields_answers_carry(make_client, stack, create_user):
    alice = await make_client("alice")
    session = await session_with(alice, tokens=2)
    sid = session["id"]
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        schema = (await http.get("/api/schema")).json()
        login = (await http.post("/api/auth/token", json={"username": create_user("s"), "password": PASSWORD})).json()
    sent = await alice.send(sid, "hi")
    waited = await alice.wait(sid, {"turnId": sent["turnId"]}, timeout=30)
    ticket = await alice.request("POST", "/api/auth/ws-ticket")
    cancelled = await alice.cancel(sid)
    models = await alice.request("GET", "/api/models")
    invited = await alice.add_member(sid, (await make_client("bob")).client_id or "")

    answers = [
        ("/api/auth/token", "post", "200", login),
        ("/api/sessions/{session_id}/turns", "post", "202", sent),
        ("/api/sessions/{session_id}/wait", "post", "200", waited),
        ("/api/auth/ws-ticket", "post", "200", ticket),
        ("/api/sessions/{session_id}/cancel", "post", "200", cancelled),
        ("/api/models", "get", "200", models),
        ("/api/sessions/{session_id}/members", "post", "201", invited),
    ]
    for path, method, status, answer in answers:
        properties = answer_schema(schema, path, method, status)["properties"]
        assert sorted(properties) == sorted(answer), (path, sorted(properties), sorted(answer))
    turn_properties = component(
        schema, answer_schema(schema, "/api/sessions/{session_id}/wait", "post", "200")["properties"]["turns"]["items"]
    )["properties"]
    assert waited["turns"] and sorted(turn_properties) == sorted(waited["turns"][0])


async def test_the_schema_and_its_docs_answer_other_methods_with_the_envelope(stack):
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        for method in ("POST", "PUT", "DELETE"):
            for path in ("/api/schema", "/api/docs", "/api/schema/"):
                response = await http.request(method, path)
                assert error_of(response) == (405, "invalid"), (method, path, response.text[:200])
                assert response.headers["Allow"] == "GET, HEAD"
        assert (await http.get("/api/schema")).status_code == 200
        assert (await http.get("/api/docs")).status_code == 200
