"""The Python matcher of cancel/wait filters (docs/protocol.md, "Filters"), on the filters as
they arrive on the wire."""

from __future__ import annotations

from typing import Any

import pytest

from sessions_app.cancellation.filters import matches
from sessions_app.schemas import CancelFilter

ME = "alice"
TURNS = [  # (turnId, owner's clientId)
    ("t1", "alice"),
    ("t2", "bob"),
    ("t3", "alice"),
    ("t4", "carol"),
]


def matched(wire: dict[str, Any], requester: str = ME) -> list[str]:
    flt = CancelFilter.model_validate(wire)
    return [t for t, owner in TURNS if matches(flt, turn_id=t, client_id=owner, requester_client_id=requester)]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"own": True}, ["t1", "t3"]),
        ({}, ["t1", "t3"]),  # {} means own
        ({"turnId": "t2"}, ["t2"]),  # someone else's turn, by id (the authoriser decides later)
        ({"turnId": "t9"}, []),  # not seen: nothing here matches (the cancel service holds it)
        ({"clientId": "bob"}, ["t2"]),
        ({"clientId": "alice"}, ["t1", "t3"]),
        ({"clientId": "nobody"}, []),
        ({"all": True}, ["t1", "t2", "t3", "t4"]),
    ],
)
def test_each_filter_names_the_documented_turns(wire: dict[str, Any], expected: list[str]) -> None:
    assert matched(wire) == expected


def test_own_follows_the_requester_not_the_filter() -> None:
    assert matched({"own": True}, requester="bob") == ["t2"]
    assert matched({"own": True}, requester="dave") == []


def test_turn_id_and_client_id_do_not_depend_on_the_requester() -> None:
    for requester in ("alice", "bob", "dave"):
        assert matched({"turnId": "t4"}, requester) == ["t4"]
        assert matched({"clientId": "carol"}, requester) == ["t4"]
        assert matched({"all": True}, requester) == ["t1", "t2", "t3", "t4"]


def test_a_turn_id_matches_only_its_own_turn_even_when_the_owner_is_the_requester() -> None:
    flt = CancelFilter.model_validate({"turnId": "t1"})
    assert matches(flt, turn_id="t1", client_id="bob", requester_client_id=ME)
    assert not matches(flt, turn_id="t3", client_id=ME, requester_client_id=ME)


def test_ids_compare_exactly() -> None:
    assert matched({"clientId": "Alice"}) == []
    assert matched({"turnId": "T1"}) == []


def test_a_filter_with_no_field_set_reads_as_own() -> None:
    # model_construct skips the validator that sets own on {}: the matcher still reads own.
    flt = CancelFilter.model_construct()
    assert matches(flt, turn_id="t1", client_id=ME, requester_client_id=ME)
    assert not matches(flt, turn_id="t2", client_id="bob", requester_client_id=ME)


@pytest.mark.parametrize("wire", [{"own": True, "all": True}, {"turnId": "t1", "clientId": "bob"}])
def test_more_than_one_field_is_refused_before_matching(wire: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        CancelFilter.model_validate(wire)
