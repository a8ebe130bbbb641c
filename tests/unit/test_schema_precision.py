"""The OpenAPI schema served at /api/schema says what the server takes (decision 048): a body
the schema calls valid is one the command schemas accept, and the other way round, for the
filter and the send, whose validators judge combinations of fields; no string a request
sends may hold a NUL character by the schema either; `model` names the configured models.
Judged with jsonschema_rs, the validator schemathesis uses (requirements-dev.txt)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from pydantic import BaseModel, ValidationError

from sessions_app.conf import app_settings
from sessions_app.schemas import CancelFilter, SendCommand, SessionCreateBody, SessionUpdateBody, WaitBody
from sessions_app.worker.providers.registry import is_configured
from tests.unit.asgi_calls import call

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="function")]


async def served() -> dict[str, Any]:
    return (await call("GET", "/api/schema")).json()  # type: ignore[no-any-return]


def validator(schema: dict[str, Any], component: str) -> Any:
    return jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{component}", "components": schema["components"]}
    )


def accepted(model: type[BaseModel], body: dict[str, Any]) -> bool:
    try:
        model.model_validate(body)
    except ValidationError:
        return False
    return True


def message(mid: str = "m", text: str = "x") -> dict[str, Any]:
    return {"id": mid, "role": "user", "parts": [{"type": "text", "text": text}]}


FILTERS: list[dict[str, Any]] = [
    {},
    {"own": True},
    {"all": True},
    {"turnId": "t-1"},
    {"clientId": "bob"},
    {"own": False},
    {"all": False},
    {"own": 1},
    {"turnId": None},
    {"clientId": ""},
    {"clientId": "b\u0000b"},
    {"turnId": "has space"},
    {"own": True, "all": True},
    {"turnId": "t", "clientId": "bob"},
    {"own": True, "turnId": "t"},
    {"nope": True},
]

SENDS: list[dict[str, Any]] = [
    {"messages": [message()]},
    {"messages": [message()], "parent": "p"},
    {"messages": [message()], "forkOf": "f"},
    {"messages": [message()], "parent": "p", "forkOf": "f"},
    {"messages": [message()], "parent": None, "forkOf": "f"},
    {"messages": [message()], "regenerate": None, "turnId": "t", "policy": "queue"},
    {"messages": [message()], "regenerate": "a"},
    {"messages": [message(), message("n")]},
    {"regenerate": "a"},
    {"regenerate": "a", "messages": []},
    {"regenerate": "a", "parent": None, "forkOf": None},
    {"regenerate": "a", "parent": "p"},
    {"regenerate": "a", "forkOf": "f"},
    {"regenerate": None},
    {"messages": []},
    {},
    {"messages": [message(text="a\u0000")]},
    {"messages": [message()], "policy": "nope"},
    {"messages": [message()], "extra": 1},
]

SESSIONS: list[dict[str, Any]] = [
    {},
    {"title": "t", "model": "demo", "modelOptions": {"tokens": 3, "nested": [{"k": "v"}]}},
    {"model": None},
    {"model": ""},
    {"model": "demo:x"},
    {"model": "nope"},
    {"title": "a\u0000"},
    {"modelOptions": {"a\u0000": 1}},
    {"modelOptions": {"a": ["b", {"c": "d\u0000"}]}},
]


async def test_the_filters_schema_takes_exactly_what_the_filter_takes():
    schema = await served()
    for component, model, wrap in (("CancelFilter", CancelFilter, False), ("WaitBody", WaitBody, True)):
        check = validator(schema, component)
        for raw in FILTERS:
            body = {"filter": raw} if wrap else raw
            assert check.is_valid(body) == accepted(model, body), (component, body)


async def test_the_sends_schema_takes_exactly_what_a_sends_validators_take():
    schema = await served()
    check = validator(schema, "SendCommand")
    for body in SENDS:
        assert check.is_valid(body) == accepted(SendCommand, body), body


async def test_a_sessions_schema_takes_exactly_what_its_body_takes():
    """The body's own checks and the services' model check (`model ... is not configured`):
    a new session's model, none or "", is the default; a change names one, or none."""
    schema = await served()
    assert await served() == schema  # made again, the same
    for component, model, empty in (
        ("SessionCreateBody", SessionCreateBody, app_settings.DEFAULT_MODEL),
        ("SessionUpdateBody", SessionUpdateBody, ""),
    ):
        check = validator(schema, component)
        for body in SESSIONS:
            named = body.get("model")
            configured = named is None or is_configured(named or empty)
            assert check.is_valid(body) == (accepted(model, body) and configured), (component, body)


async def test_the_send_limits_are_in_the_schema(settings):
    """Over them a send is `too_large` (413), after validation: the schema says so too."""
    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "MAX_MESSAGES_PER_SEND": 3, "MAX_MESSAGE_CHARS": 10}
    check = validator(await served(), "SendCommand")
    assert check.is_valid({"messages": [message(str(i)) for i in range(3)]})
    assert not check.is_valid({"messages": [message(str(i)) for i in range(4)]})
    assert check.is_valid({"messages": [message(text="x" * 10)]})
    assert not check.is_valid({"messages": [message(text="x" * 11)]})


async def test_what_the_schema_cannot_say():
    """Schema-valid, refused: the messages of a send have different ids (JSON Schema can
    compare whole items only), and the characters of a message's parts add up to the limit
    (each part alone is bounded). If the schema comes to say one, move it above."""
    check = validator(await served(), "SendCommand")
    twice = {"messages": [message("m"), message("m")]}
    assert check.is_valid(twice) and not accepted(SendCommand, twice)


async def test_the_models_are_the_configured_ones(monkeypatch):
    def model_schema(schema: dict[str, Any], component: str = "SessionUpdateBody") -> dict[str, Any]:
        options = schema["components"]["schemas"][component]["properties"]["model"]["anyOf"]
        [named] = [option for option in options if option.get("type") == "string"]
        return named  # type: ignore[no-any-return]

    for prefix in ("OPENAI", "ANTHROPIC"):
        for suffix in ("API_KEY", "BASE_URL", "MODELS"):
            monkeypatch.delenv(f"{prefix}_{suffix}", raising=False)
    assert model_schema(await served())["enum"] == ["demo"]
    assert model_schema(await served(), "SessionCreateBody")["enum"] == ["", "demo"]  # "": the default
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_MODELS", "gpt-a, gpt-b")
    assert model_schema(await served())["enum"] == ["demo", "openai:gpt-a", "openai:gpt-b"]  # read at each GET
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # no list: any anthropic model
    named = model_schema(await served())
    check = jsonschema_rs.Draft202012Validator(named)
    for model in ("demo", "openai:gpt-a", "anthropic:any-model", "openai:gpt-c", "anthropic:", "demo:x", "x"):
        assert check.is_valid(model) == is_configured(model), model


def strings(schema: dict[str, Any], node: Any, where: str, seen: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every node of `node` that a string or an object's key is checked against, with where it is."""
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[1]
        if name not in seen:
            yield from strings(schema, schema["components"]["schemas"][name], f"{where}->{name}", seen | {name})
        return
    if node.get("type") == "string" and "enum" not in node and "const" not in node:
        yield where, node
    if node.get("type") == "object" and node.get("additionalProperties") is not False:
        yield f"{where} (keys)", node.get("propertyNames", {})
    for key, child in node.get("properties", {}).items():
        yield from strings(schema, child, f"{where}.{key}", seen)
    for key in ("items", "additionalProperties"):
        yield from strings(schema, node.get(key), f"{where}.{key}", seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for child in node.get(key, ()):
            yield from strings(schema, child, where, seen)


async def test_no_string_a_request_sends_may_hold_a_nul_character_by_the_schema():
    schema = await served()
    found = 0
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            inputs = [(f"{p['in']} {p['name']}", p["schema"]) for p in operation.get("parameters", ())]
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            inputs += [("body", body)] if body else []
            for name, node in inputs:
                for where, string in strings(schema, node, f"{method} {path} {name}", set()):
                    found += 1
                    pattern = string.get("pattern")
                    assert pattern is not None, where
                    assert re.search(pattern, "a\u0000b") is None and re.search(pattern, "ab"), where
    assert found > 30
