"""Cancel authorisers: `SESSIONS_APP["CANCEL_AUTHORISER"]` names one of these (or a site's
own callable with the same signature). An authoriser returns the turn ids that may be
cancelled; the others are reported to the requester as rejected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CancelRequest:
    """What an authoriser decides on."""

    session_id: str
    requester_id: int  # the requesting user's pk
    client_id: str  # the requester's clientId
    is_session_owner: bool
    filter: dict[str, Any]
    matched_turn_ids: list[str]
    turn_owners: dict[str, str] = field(default_factory=dict)  # turnId -> owner's clientId


def allow_any_member(request: CancelRequest) -> Iterable[str]:
    """Default: any member of the session may cancel any of its turns (as the hosted
    product does when no onCancel hook is set)."""
    return request.matched_turn_ids


def turn_owner_only(request: CancelRequest) -> Iterable[str]:
    """Only the user who started a turn may cancel it."""
    return [t for t in request.matched_turn_ids if request.turn_owners.get(t) == request.client_id]


def turn_owner_or_session_owner(request: CancelRequest) -> Iterable[str]:
    """The turn's owner, or the session's owner (a moderator), may cancel it."""
    if request.is_session_owner:
        return request.matched_turn_ids
    return turn_owner_only(request)
