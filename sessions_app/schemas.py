"""Typed schemas of the commands clients send (docs/protocol.md), validated at the edge, over
HTTP and the websocket alike. The events the server emits are typed in events/types.py."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from sessions_app.models import Policy

Id = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]


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
ModelOptions = Annotated[dict[str, Any], plain_json(max_depth=16, max_bytes=64 * 1024)]
# A websocket frame's `ref`, echoed back in its answer: any small JSON value.
Ref = Annotated[Any, plain_json(max_depth=8, max_bytes=1024)]


_REF_CHECK = plain_json(max_depth=8, max_bytes=1024)


def echoable_ref(value: Any) -> Any:
    """`value` if it may be echoed as a `ref`, else None (for error answers to frames that
    did not validate)."""
    try:
        return _REF_CHECK.func(value)  # type: ignore[call-arg]
    except ValueError:
        return None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- commands ----------------------------------------------------------------------------


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(min_length=1)


class UserMessage(Strict):
    id: Id
    role: Literal["user"]
    parts: list[TextPart] = Field(min_length=1)


class SendBody(Strict):
    turn_id: Id | None = Field(default=None, alias="turnId")
    messages: list[UserMessage] = Field(default_factory=list)
    parent: Id | None = None
    fork_of: Id | None = Field(default=None, alias="forkOf")
    regenerate: Id | None = None
    policy: Policy | None = None

    @model_validator(mode="after")
    def one_of_messages_or_regenerate(self) -> SendBody:
        if self.regenerate and self.messages:
            raise ValueError("a regenerate carries no messages")
        if not self.regenerate and not self.messages:
            raise ValueError("messages must hold at least one user message")
        if self.regenerate and (self.fork_of or self.parent):
            raise ValueError("regenerate takes neither parent nor forkOf")
        return self


class CancelFilter(Strict):
    """Exactly one of own / turnId / clientId / all."""

    own: Literal[True] | None = None
    turn_id: Id | None = Field(default=None, alias="turnId")
    client_id: Annotated[str, StringConstraints(min_length=1, max_length=150)] | None = Field(
        default=None, alias="clientId"
    )
    all: Literal[True] | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> CancelFilter:
        given = [v for v in (self.own, self.turn_id, self.client_id, self.all) if v is not None]
        if len(given) > 1:
            raise ValueError("a filter holds exactly one of own, turnId, clientId, all")
        if not given:
            self.own = True  # {} means own
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class WaitBody(Strict):
    filter: CancelFilter = Field(default_factory=CancelFilter)
    timeout: float = Field(default=30, ge=0, le=60)


class SessionCreateBody(Strict):
    title: str = Field(default="", max_length=200)
    model: str | None = Field(default=None, max_length=100)
    model_options: ModelOptions = Field(default_factory=dict, alias="modelOptions")
    policy: Policy | None = None


class SessionUpdateBody(Strict):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=100)
    model_options: ModelOptions | None = Field(default=None, alias="modelOptions")
    policy: Policy | None = None


class MemberBody(Strict):
    username: str = Field(min_length=1, max_length=150)


# websocket frames


class WsSend(SendBody):
    type: Literal["send"]
    ref: Ref = None


class WsCancel(Strict):
    type: Literal["cancel"]
    ref: Ref = None
    filter: CancelFilter = Field(default_factory=CancelFilter)


class WsClose(Strict):
    type: Literal["close"]
    ref: Ref = None
    cancel: CancelFilter | None = None


class WsPing(Strict):
    type: Literal["ping"]
    ref: Ref = None
