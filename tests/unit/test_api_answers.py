"""The OpenAPI schema's success answers (web/api/answers.py) against real ones: every
endpoint's answer, made through the ASGI application Daphne runs, conforms to the schema
/api/schema serves for it, field names included; and no answer is handed to Ninja to be
validated or serialised again (the views answer with HttpResponses of their own)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from sessions_app.web.api.app import api
from tests.unit.asgi_calls import call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]

PASSWORD = "pw-for-answers"

IS_A: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def problems(schema: dict[str, Any], node: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Where `value` does not conform to `node` of `schema` (the subset of JSON Schema that
    pydantic writes), stricter in one way: an object may hold no field its schema does not
    name, so that a field sent and not documented fails too."""
    node = resolved(schema, node)
    if "discriminator" in node:
        key = node["discriminator"]["propertyName"]
        target = node["discriminator"]["mapping"].get(value.get(key)) if isinstance(value, dict) else None
        return problems(schema, {"$ref": target}, value, where) if target else [f"{where}: unknown {key} in {value}"]
    options = node.get("anyOf") or node.get("oneOf")
    if options is not None:
        found = [problems(schema, option, value, where) for option in options]
        return [] if [] in found else [f"{where}: {value!r} is none of {options}"]
    if "allOf" in node:
        return [p for part in node["allOf"] for p in problems(schema, part, value, where)]
    if "const" in node and value != node["const"]:
        return [f"{where}: {value!r} is not {node['const']!r}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{where}: {value!r} is not one of {node['enum']}"]
    kind = node.get("type")
    if kind is None:
        return []
    if not IS_A[kind](value):
        return [f"{where}: {value!r} is no {kind}"]
    if kind == "array":
        return [
            p for i, item in enumerate(value) for p in problems(schema, node.get("items", {}), item, f"{where}[{i}]")
        ]
    if kind != "object":
        return []
    named = node.get("properties")
    if named is None:
        extra = node.get("additionalProperties")
        if not isinstance(extra, dict):
            return []
        return [p for key, item in value.items() for p in problems(schema, extra, item, f"{where}.{key}")]
    unnamed, missing = sorted(set(value) - set(named)), sorted(set(node.get("required", ())) - set(value))
    if unnamed or missing:
        return [f"{where}: sent but not in the schema {unnamed}, in the schema's required but not sent {missing}"]
    return [p for key, item in value.items() for p in problems(schema, named[key], item, f"{where}.{key}")]


def resolved(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    return node


def answer_schema(schema: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    answer: dict[str, Any] = schema["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
    return answer["schema"]  # type: ignore[no-any-return]


async def test_the_checker_finds_what_does_not_conform():
    """The check below can fail: a field the schema does not name, one missing, a wrong type."""
    schema: dict[str, Any] = {"components": {"schemas": {}}}
    node: dict[str, Any] = {"type": "object", "properties": {"turnId": {"type": "string"}}, "required": ["turnId"]}
    assert problems(schema, node, {"turnId": "t"}) == []
    assert problems(schema, node, {"turnId": "t", "turn_id": "t"})
    assert problems(schema, node, {})
    assert problems(schema, node, {"turnId": 5})


@pytest.fixture
def users(settings) -> tuple[Any, Any]:
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AGENTS": "example"}
    settings.ABLY_API_KEY = "app.key:secret"  # a token request is signed here, without asking Ably
    make = get_user_model().objects.create_user
    tag = uuid.uuid4().hex[:8]
    return make(f"owner-{tag}", password=PASSWORD, is_staff=True), make(f"bob-{tag}", password=PASSWORD)


async def test_every_answer_conforms_to_the_schema_of_its_endpoint(users, monkeypatch):
    owner, bob = users

    def serialised_by_ninja(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an endpoint handed Ninja data to validate and serialise")

    monkeypatch.setattr(api, "create_response", serialised_by_ninja)
    schema = (await call("GET", "/api/schema")).json()
    login = await call("POST", "/api/auth/token", body={"username": owner.get_username(), "password": PASSWORD})
    token = login.json()["token"]
    answers: list[tuple[str, str, Any]] = [("/api/auth/token", "post", login)]

    async def answer(method: str, path: str, body: Any = None, **names: str) -> Any:
        sent = await call(method, path.format(session_id=sid, **names), token, body)
        answers.append((path, method.lower(), sent))
        return sent.json()

    sid = ""
    sid = (await answer("POST", "/api/sessions", {"title": "answers"}))["id"]
    S = "/api/sessions/{session_id}"
    await answer("PATCH", S, {"title": "renamed"})
    await answer("POST", S + "/members", {"username": bob.get_username()})
    await answer("POST", S + "/agents", {"name": "critic"})
    await answer("GET", S + "/agents")
    await answer("GET", "/api/agents")
    await answer("GET", "/api/models")
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}
    sent = await answer("POST", S + "/turns", {"messages": [message]})
    await answer("POST", S + "/turns", {"messages": [message], "turnId": sent["turnId"]})  # repeated: 200
    detail = await answer("GET", S)  # no worker here: the turn stays active
    await answer("GET", S + "/turns")
    await answer("GET", S + "/turns/{turn_id}", turn_id=sent["turnId"])
    await answer("GET", S + "/messages")
    cancelled = await answer("POST", S + "/cancel", {})
    await answer("POST", S + "/wait", {"timeout": 0})
    await answer("GET", "/api/sessions")
    await answer("POST", S + "/ably-token")
    await answer("GET", "/api/ably/stats")
    await answer("POST", "/api/auth/ws-ticket")
    async with asyncio.timeout(30):  # the send's and the cancel's events go out after their answers
        while not any(
            e["type"] == "cancel" for e in (await call("GET", f"/api/sessions/{sid}/events", token)).json()["events"]
        ):
            await asyncio.sleep(0.01)
    events = await answer("GET", S + "/events")
    await answer("POST", "/api/auth/token/revoke", {})  # last: the token ends

    assert detail["turns"] and cancelled["cancelled"] + cancelled["pending"] == [sent["turnId"]]
    assert {e["type"] for e in events["events"]} >= {"message", "turn.start", "cancel", "member.joined"}
    statuses = [(path, method, sent.status) for path, method, sent in answers]
    assert ("/api/sessions/{session_id}/turns", "post", 202) in statuses
    assert ("/api/sessions/{session_id}/turns", "post", 200) in statuses
    for path, method, sent in answers:
        assert 200 <= sent.status < 300, (path, method, sent)
        documented = answer_schema(schema, path, method, sent.status)
        assert resolved(schema, documented).get("properties"), (method, path, "an answer of unnamed fields")
        found = problems(schema, documented, sent.json())
        assert found == [], (method, path, found)
    endpoints = {(path, method) for path, methods in schema["paths"].items() for method in methods}
    answered = {(path, method) for path, method, _ in answers}
    # Every endpoint but those answering 204 (no body) and the Ably invocation (it needs an
    # input published on Ably first: tests/ably) was checked.
    left = {
        ("/api/sessions/{session_id}", "delete"),
        ("/api/sessions/{session_id}/members", "delete"),
        ("/api/sessions/{session_id}/agents/{name}", "delete"),
        ("/api/ably/invocations", "post"),
    }
    assert endpoints - answered == left


S = "/api/sessions/{session_id}"
SESSION = {400, 401, 403, 404, 500, 503}  # a session named: not a member, unknown; a NUL in the path
# The error statuses each operation may answer (docs/protocol.md, "Errors"), and only those.
ERROR_STATUSES: dict[tuple[str, str], set[int]] = {
    ("/api/auth/token", "post"): {400, 401, 413, 429, 500, 503},
    ("/api/auth/token/revoke", "post"): {400, 401, 403, 413, 500, 503},
    ("/api/auth/ws-ticket", "post"): {401, 403, 500, 503},
    ("/api/models", "get"): {401, 500, 503},
    ("/api/sessions", "get"): {401, 500, 503},
    ("/api/agents", "get"): {401, 500, 503},
    ("/api/sessions", "post"): {400, 401, 403, 413, 500, 503},
    (S, "get"): SESSION,
    (S, "patch"): SESSION | {413},
    (S, "delete"): SESSION,
    (S + "/members", "post"): SESSION | {413},
    (S + "/members", "delete"): SESSION,  # 400: the owner cannot leave
    (S + "/agents", "get"): SESSION,
    (S + "/agents", "post"): SESSION | {413},
    (S + "/agents/{name}", "delete"): SESSION,
    (S + "/turns", "post"): SESSION | {409, 413, 429},
    (S + "/turns", "get"): SESSION,
    (S + "/turns/{turn_id}", "get"): SESSION,
    (S + "/cancel", "post"): SESSION | {413},
    (S + "/wait", "post"): SESSION | {413},
    (S + "/messages", "get"): SESSION,
    (S + "/events", "get"): SESSION,
    (S + "/ably-token", "post"): SESSION,
    ("/api/ably/stats", "get"): {401, 403, 500, 503},  # staff only
    ("/api/ably/invocations", "post"): {400, 401, 403, 404, 409, 413, 429, 500, 503},  # a send
}


async def test_the_schema_keeps_the_error_envelope_of_every_documented_status():
    """Each operation lists the error statuses it may answer, each with the envelope."""
    schema = (await call("GET", "/api/schema")).json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            declared = {int(status) for status in operation["responses"] if int(status) >= 400}
            expected = ERROR_STATUSES.get((path, method), set())
            assert declared == expected, (method, path, sorted(declared))
            for status in declared:
                envelope = operation["responses"][str(status)]["content"]["application/json"]["schema"]
                assert envelope == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, status)
    codes = schema["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert {"invalid", "busy", "conflict", "too_large", "queue_full", "rate_limited", "unavailable"} <= set(codes)


async def test_an_answers_field_names_are_the_sent_ones():
    """camelCase, as sent; the snake_case names of the models never reach the schema."""
    schema = (await call("GET", "/api/schema")).json()
    detail = answer_schema(schema, "/api/sessions/{session_id}", "get", 200)
    named = schema["components"]["schemas"][detail["$ref"].rsplit("/", 1)[1]]["properties"]
    assert {"lastSeq", "activeTurns", "queuedTurns", "modelOptions", "createdAt"} <= set(named)
    snake = [
        name
        for component in schema["components"]["schemas"].values()
        for name in component.get("properties", {})
        if "_" in name and not component.get("title", "").startswith("AblyStats")  # the mirror's figures
    ]
    assert snake == []


async def test_the_schema_names_the_ranges_of_the_paging_numbers_and_the_statuses():
    """A client generated from the schema sends what the server takes."""
    schema = (await call("GET", "/api/schema")).json()

    def query(path: str) -> dict[str, Any]:
        return {p["name"]: p["schema"] for p in schema["paths"][path]["get"]["parameters"] if p["in"] == "query"}

    messages, events = query("/api/sessions/{session_id}/messages"), query("/api/sessions/{session_id}/events")
    assert (messages["limit"]["minimum"], messages["limit"]["maximum"]) == (1, 500)
    assert (events["limit"]["minimum"], events["limit"]["maximum"]) == (1, 5000)
    assert (events["after"]["minimum"], events["after"]["maximum"]) == (0, 2**62)
    status = query("/api/sessions/{session_id}/turns")["status"]
    [named] = [option["$ref"] for option in status["anyOf"] if "$ref" in option]
    statuses = schema["components"]["schemas"][named.rsplit("/", 1)[1]]["enum"]
    assert set(statuses) == {"active", "queued", "complete", "cancelled", "error"}
