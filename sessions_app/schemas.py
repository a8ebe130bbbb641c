"""Typed schemas of the commands clients send (docs/protocol.md), validated at the edge, over
HTTP and the websocket alike. The events the server emits are typed in events/types.py."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import JsonDict, JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema, PydanticCustomError

from sessions_app.conf import app_settings
from sessions_app.models import Policy
from sessions_app.worker.providers.config import vendor_config
from sessions_app.worker.providers.registry import VENDORS, available_models

Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]

MAX_SEQ = 2**62  # the largest seq a client may name (`after`, over HTTP and the websocket)


def is_whole_number(raw: str, low: int, high: int) -> bool:
    """`raw` is a whole number from `low` to `high` written in ASCII digits alone, as a URL's
    number is taken (int() would also read `+5`, ` 5`, `5_0`)."""
    return raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high


# --- what the OpenAPI schema says beyond the types -------------------------------------------
# The schema served at /api/schema is generated from these models (web/api/app.py), and a
# client or a fuzzer makes its "valid" requests from it: it must not call valid what the
# checks below refuse (decision 048). What a check refuses is written into the schema here,
# as annotations and `json_schema_extra`, which only describe: no code of theirs runs when a
# request is validated (the send and cancel endpoints' budget: docs/performance.md). The
# schema is generated again at each GET of /api/schema (Django Ninja keeps no copy), so what
# it reads of the configuration (the models, the limits) is the configuration then.

NUL_FREE = r"^[^\u0000]*$"  # a JSON Schema (ECMA-262) and Python pattern: no U+0000


@dataclass(frozen=True)
class _NoNulInSchema:
    """A string's schema says it holds no NUL character (which `Command` refuses anywhere,
    like a path or query holding one: web/api/app.py). Schema only."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        handler.resolve_ref_schema(schema).setdefault("pattern", NUL_FREE)  # an Id's pattern already excludes it
        return schema


@dataclass(frozen=True)
class _KeysWithoutNul:
    """An object's schema says its keys hold no NUL character. Schema only."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        handler.resolve_ref_schema(schema)["propertyNames"] = {"pattern": NUL_FREE}
        return schema


@dataclass(frozen=True)
class _JsonWithoutNul:
    """An object's schema says that nothing in it, key or value at any depth, holds a NUL
    character: its values are `PlainJsonValue`s (a model's options). Schema only."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        target["propertyNames"] = {"pattern": NUL_FREE}
        target["additionalProperties"] = handler(_plain_json_value_schema())
        return schema


@dataclass(frozen=True)
class _ConfiguredModelInSchema:
    """A model's schema names the models configured (`available_models()`, read from the
    environment when the schema is made, as the server's check reads it: registry.py), and,
    for a vendor configured without a list of models, any `<vendor>:<name>`; `empty_is_default`:
    `""` too (a new session's model: none given is the default). Schema only: the check is
    the services' (`model ... is not configured`)."""

    empty_is_default: bool = False

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        models = ["", *available_models()] if self.empty_is_default else available_models()
        unlisted = [name for name, (prefix, _) in VENDORS.items() if _lists_no_models(prefix)]
        if unlisted:
            any_name = {"pattern": f"^({'|'.join(unlisted)}):[^\\u0000]+$"}
            target["anyOf"] = [{"enum": models}, any_name]
        else:
            target["enum"] = models
        return schema


def _lists_no_models(prefix: str) -> bool:
    config = vendor_config(prefix)
    return config is not None and not config.models


# Text a client sends: any string without a NUL character.
Text = Annotated[str, _NoNulInSchema()]


class PlainJsonValue(RootModel[Union[Text, int, float, bool, list["PlainJsonValue"], "_JsonObject", None]]):
    """Any JSON value without a NUL character, in a value or a key."""

    # For the schema only (a component of its own, as it nests): ModelOptions' values.
    # Nothing is validated with it; plain_json() and `Command` check what is sent.


_JsonObject = Annotated[dict[str, PlainJsonValue], _KeysWithoutNul()]


@functools.cache
def _plain_json_value_schema() -> CoreSchema:
    PlainJsonValue.model_rebuild()
    return PlainJsonValue.__pydantic_core_schema__


# A model's name, as a session names it: one configured; for a new session, "" (or null) is
# the default model (services.session_create).
ModelName = Annotated[str, StringConstraints(max_length=100), _NoNulInSchema(), _ConfiguredModelInSchema()]
NewModelName = Annotated[
    str, StringConstraints(max_length=100), _NoNulInSchema(), _ConfiguredModelInSchema(empty_is_default=True)
]


# --- plain JSON values ----------------------------------------------------------------------
# A value the server stores or echoes must survive a round trip through every JSON encoder
# on its way (the database's, orjson's, a browser's): text that is valid Unicode (no lone
# surrogates, in values or keys), finite numbers, string keys, bounded nesting and size.
# Anything else is refused here, with `invalid`, before it is stored for every member to read.


def _plain_json_problem(value: Any, max_depth: int) -> str | None:
    """Why `value` is not plain JSON, or None (iterative: the check itself never recurses)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite"
        if isinstance(item, str):
            if not _is_unicode(item):
                return "text must be valid Unicode"
        elif isinstance(item, dict | list):
            if depth > max_depth:
                return f"values nest at most {max_depth} levels"
            if isinstance(item, dict):
                for key in item:
                    if not isinstance(key, str) or not _is_unicode(key):
                        return "keys must be valid Unicode text"
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif not isinstance(item, int | float):
            return f"{type(item).__name__} is not a JSON value"
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def plain_json(*, max_depth: int, max_bytes: int) -> AfterValidator:
    """A validator: the value is plain JSON (above) of at most `max_bytes` encoded."""

    def check(value: Any) -> Any:
        problem = _plain_json_problem(value, max_depth)
        if problem is None:
            try:
                size = len(orjson.dumps(value))
            except (TypeError, orjson.JSONEncodeError):
                problem = "not a JSON value"
            else:
                if size > max_bytes:
                    problem = f"at most {max_bytes} bytes of JSON"
        if problem is not None:
            raise ValueError(problem)
        return value

    return AfterValidator(check)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_safe(value: Any) -> Any:
    """A copy of a stored JSON value that any encoder takes: lone surrogates become U+FFFD,
    non-finite numbers null. For reads of values stored before the checks above existed."""
    if isinstance(value, str):
        return value if _is_unicode(value) else _SURROGATE.sub("\ufffd", value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


# A model's options: a JSON object, as small and shallow as any provider's options are.
ModelOptions = Annotated[dict[str, Any], plain_json(max_depth=16, max_bytes=64 * 1024), _JsonWithoutNul()]
# A websocket frame's `ref`, echoed back in its answer: any small JSON value.
Ref = Annotated[Any, plain_json(max_depth=8, max_bytes=1024)]


_REF_CHECK = plain_json(max_depth=8, max_bytes=1024)


def echoable_ref(value: Any) -> Any:
    """`value` if it may be echoed as a `ref`, else None (for error answers to frames that
    did not validate): a ref the command schemas refuse (too deep or big, holding a NUL
    character) is not echoed."""
    try:
        checked = _REF_CHECK.func(value)  # type: ignore[call-arg]
    except ValueError:
        return None
    return None if nul_problem(checked) is not None else checked


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- commands ----------------------------------------------------------------------------
# What clients send, over HTTP and the websocket alike. PostgreSQL's text and JSON cannot
# hold a NUL character (U+0000): its driver would fail the write, which reads as an outage
# (`unavailable`, retried forever), and SQLite would store it. A command holding one anywhere,
# in a value or a key, is `invalid` before anything reads it.

NUL = "\x00"


def nul_problem(value: Any) -> str | None:
    """Where `value` (decoded JSON) holds a NUL character, as a message naming the field,
    or None (iteratively, like the checks above)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        problem = None
        if isinstance(item, str):
            problem = "text may not contain NUL characters" if NUL in item else None
        elif isinstance(item, dict):
            if any(isinstance(key, str) and NUL in key for key in item):
                problem = "keys may not contain NUL characters"
            stack.extend((child, _joined(where, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, _joined(where, index)) for index, child in enumerate(item))
        if problem is not None:
            return f"{where}: {problem}" if where else problem
    return None


def _joined(where: str, key: object) -> str:
    name = str(key)[:40]  # a client's key, echoed in the message: bounded
    return f"{where}.{name}" if where else name


class CommandPart(Strict):
    """What a command holds (a message, a part): JSON's types as sent, never coerced
    (strict): `1` is no `true` and `"5"` no number, so a loosely typed client gets `invalid`
    instead of, say, cancelling every turn with `{"all": 1}`. Its NUL check is the
    command's, made once over the whole input."""

    model_config = ConfigDict(strict=True)


class Command(CommandPart):
    """A command, as a client sends it: strict, and no NUL character anywhere in it (one
    look at the whole input; the parts it holds do not look again)."""

    @model_validator(mode="before")
    @classmethod
    def without_nul(cls, data: Any) -> Any:
        problem = nul_problem(data)
        if problem is not None:  # a custom error: its message as is (no "Value error, ")
            raise PydanticCustomError("nul_character", "{problem}", {"problem": problem})
        return data


def _exactly_true(value: Any) -> Any:
    # `Literal[True]` takes 1 and 1.0 too (they equal True in Python), strict or not.
    if value is not True and value is not None:
        raise PydanticCustomError("literal_error", "Input should be true")
    return value


# A flag of a filter: JSON's `true`, or absent (a null given is refused: CancelFilter; the
# schema shows no null).
TrueFlag = Annotated[Literal[True] | SkipJsonSchema[None], BeforeValidator(_exactly_true)]
# A policy's name: an enum, which strict validation would take only as the Python enum.
PolicyName = Annotated[Policy, Field(strict=False)]


def _at_most_message_chars(schema: JsonDict) -> None:
    # Schema only: a message over the limit is `too_large` (turns/sending.py), which the
    # schema can say of one part; of several, it cannot say that their sum is bounded.
    schema["maxLength"] = app_settings.MAX_MESSAGE_CHARS


def _at_most_messages_per_send(schema: JsonDict) -> None:
    schema["maxItems"] = app_settings.MAX_MESSAGES_PER_SEND  # schema only: more are `too_large`


class TextPart(CommandPart):
    type: Literal["text"]
    text: Text = Field(min_length=1, json_schema_extra=_at_most_message_chars)


class UserMessage(CommandPart):
    id: Id
    role: Literal["user"]
    parts: list[TextPart] = Field(min_length=1)


# What a send's validators take, for the schema (a JSON Schema; schema only): it regenerates
# (`regenerate` given, no messages, neither `parent` nor `forkOf`), or it carries messages (no
# `regenerate`). A field given as null is one not given. (A property's schema holds for an
# object only where the object has that property: `"parent": {"type": "null"}` says "no
# parent".)
_REGENERATES: JsonDict = {
    "required": ["regenerate"],
    "properties": {
        "regenerate": {"not": {"type": "null"}},
        "messages": {"maxItems": 0},
        "parent": {"type": "null"},
        "forkOf": {"type": "null"},
    },
}
_CARRIES_MESSAGES: JsonDict = {
    "required": ["messages"],
    "properties": {"messages": {"minItems": 1}, "regenerate": {"type": "null"}},
}
# A client's edit (`forkOf`) names no `parent` (SendCommand).
_NOT_BOTH_PARENT_AND_FORK_OF: JsonDict = {
    "anyOf": [{"properties": {"parent": {"type": "null"}}}, {"properties": {"forkOf": {"type": "null"}}}]
}


class SendBody(Command):
    """A send, as the server's own callers make it too (agents, an Ably client's input)."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [_REGENERATES, _CARRIES_MESSAGES]})

    turn_id: Id | None = Field(default=None, alias="turnId")
    messages: list[UserMessage] = Field(default_factory=list, json_schema_extra=_at_most_messages_per_send)
    parent: Id | None = None
    fork_of: Id | None = Field(default=None, alias="forkOf")
    regenerate: Id | None = None
    policy: PolicyName | None = None

    @model_validator(mode="after")
    def one_of_messages_or_regenerate(self) -> SendBody:
        if self.regenerate and self.messages:
            raise ValueError("a regenerate carries no messages")
        if not self.regenerate and not self.messages:
            raise ValueError("messages must hold at least one user message")
        if self.regenerate and (self.fork_of or self.parent):
            raise ValueError("regenerate takes neither parent nor forkOf")
        seen: set[str] = set()
        for message in self.messages:  # else the second reads as the first's id reused: `conflict`
            if message.id in seen:
                raise ValueError(f"message ids are unique within a send: {message.id!r} is repeated")
            seen.add(message.id)
        return self


class SendCommand(SendBody):
    """A client's send (HTTP and websocket): an edit (`forkOf`) goes where the message it
    edits is, so it names no `parent`. (An Ably client's input names both, the parent being
    that message's: ably/invocations.py builds a SendBody.)"""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [_REGENERATES, {**_CARRIES_MESSAGES, **_NOT_BOTH_PARENT_AND_FORK_OF}]}
    )

    @model_validator(mode="after")
    def an_edit_names_no_parent(self) -> SendCommand:
        if self.fork_of and self.parent:
            raise ValueError("forkOf takes no parent: an edit goes beside the message it edits")
        return self


class CancelFilter(Command):
    """`{}` (own), or exactly one of own / turnId / clientId / all. A key given as null is
    refused, not read as absent: `{"turnId": null}` from a client whose variable is unset
    must not become `{}`, which cancels all of the caller's turns. (`| SkipJsonSchema[None]`:
    the schema shows no null; `own` and `all` are `true` only; so the schema's
    `maxProperties: 1` says the rest.)"""

    model_config = ConfigDict(json_schema_extra={"maxProperties": 1})

    own: TrueFlag = None
    turn_id: Id | SkipJsonSchema[None] = Field(default=None, alias="turnId")
    client_id: Annotated[Text, StringConstraints(min_length=1, max_length=150)] | SkipJsonSchema[None] = Field(
        default=None, alias="clientId"
    )
    all: TrueFlag = None

    @model_validator(mode="after")
    def exactly_one(self) -> CancelFilter:
        for name, field in type(self).model_fields.items():
            if name in self.model_fields_set and getattr(self, name) is None:
                key = field.alias or name
                raise ValueError(f"{key} may not be null: a filter holds one of own, turnId, clientId, all ({{}}: own)")
        given = [v for v in (self.own, self.turn_id, self.client_id, self.all) if v is not None]
        if len(given) > 1:
            raise ValueError("a filter holds exactly one of own, turnId, clientId, all")
        if not given:
            self.own = True  # {} means own
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class WaitBody(Command):
    filter: CancelFilter = Field(default_factory=CancelFilter)
    timeout: float = Field(default=30, ge=0, le=60)


class SessionCreateBody(Command):
    title: Text = Field(default="", max_length=200)
    model: NewModelName | None = None
    model_options: ModelOptions = Field(default_factory=dict, alias="modelOptions")
    policy: PolicyName | None = None


class SessionUpdateBody(Command):
    title: Text | None = Field(default=None, max_length=200)
    model: ModelName | None = None
    model_options: ModelOptions | None = Field(default=None, alias="modelOptions")
    policy: PolicyName | None = None


class MemberBody(Command):
    username: Text = Field(min_length=1, max_length=150)


# websocket frames


class WsSend(SendCommand):
    type: Literal["send"]
    ref: Ref = None


class WsCancel(Command):
    type: Literal["cancel"]
    ref: Ref = None
    filter: CancelFilter = Field(default_factory=CancelFilter)


class WsClose(Command):
    type: Literal["close"]
    ref: Ref = None
    cancel: CancelFilter | None = None


class WsPing(Command):
    type: Literal["ping"]
    ref: Ref = None
