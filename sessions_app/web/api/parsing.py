"""Request bodies of the HTTP API: JSON objects, parsed with orjson, with a bound on
nesting (a deeply nested body must get `invalid`, not exhaust the stack of whatever reads
it next: validation, the database's JSON encoder, a response)."""

from __future__ import annotations

from typing import Any, cast

import orjson
from django.http import HttpRequest
from ninja.parser import Parser

from sessions_app.errors import Invalid
from sessions_app.schemas import nul_problem

MAX_DEPTH = 32  # levels of objects and arrays: far more than any documented body needs


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise Invalid if `value` nests objects/arrays deeper than `limit` (iteratively:
    the check itself must not recurse)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    raise Invalid(f"the body nests deeper than {limit} levels")
                stack.append((child, depth + 1))


def load_json(raw: bytes | str) -> Any:
    """Parse a JSON body; Invalid for malformed or too deeply nested JSON, or JSON holding
    a NUL character (the command schemas refuse it too; this covers every body, those of
    endpoints whose schemas live elsewhere included)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid("the body is not valid JSON") from exc
    check_depth(value)
    problem = nul_problem(value)
    if problem is not None:
        raise Invalid(problem)
    return value


class JsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        value = load_json(request.body)
        if not isinstance(value, dict):
            raise Invalid("the body must be a JSON object")
        return cast(dict[str, Any], value)
