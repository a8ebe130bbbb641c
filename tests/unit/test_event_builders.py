"""The delta builder (events/build.py) writes its event out by hand, for speed: it must be
exactly what its model (events/types.py, `Delta`) makes, as docs/protocol.md describes it."""

from __future__ import annotations

from typing import Literal

import pytest

from sessions_app.events import build
from sessions_app.events.types import Delta


@pytest.mark.parametrize("part", ["text", "reasoning"])
def test_a_delta_is_what_its_model_makes(part: Literal["text", "reasoning"]) -> None:
    event = build.delta("turn-1", "a-1", "Hello, wörld \n", part)
    modelled = Delta(
        type="delta",
        turn_id="turn-1",
        message_id="a-1",
        text="Hello, wörld \n",
        part="reasoning" if part == "reasoning" else None,
        at=event["at"],
    ).wire()
    assert list(event.items()) == list(modelled.items())  # the same fields, in the same order
    assert Delta.model_validate(event).wire() == event
