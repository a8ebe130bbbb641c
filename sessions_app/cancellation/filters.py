"""Which turns a cancel/wait filter names, decided in Python (docs/protocol.md, "Filters").

The cancel service selects the same turns in SQL (`sessions_app.turns._queries.cancellable_turns`);
this is the one Python reading of a filter, used where turns are already in hand (`wait`).
"""

from __future__ import annotations

from sessions_app.schemas import CancelFilter


def matches(flt: CancelFilter, *, turn_id: str, client_id: str, requester_client_id: str) -> bool:
    """Does `flt` name the turn `turn_id`, owned by `client_id`, for a request made by
    `requester_client_id`?

    A filter holds exactly one of (docs/protocol.md, "Filters"):

    - ``{"turnId": t}``: the one turn whose id is ``t``, whoever started it (for a cancel,
      the authoriser hook then decides whether the requester may cancel it);
    - ``{"clientId": c}``: every turn started by the user whose clientId is ``c``, on any of
      their devices;
    - ``{"own": true}``: every turn started by the requester (any of their devices); this
      is the default, written ``{}`` too, and what a filter with no field set means here;
    - ``{"all": true}``: every turn of the session.

    Only who and which turn are decided here, not the turn's state: a cancel considers the
    queued and active turns, a wait the queued and active ones plus, for a ``turnId``, that
    turn in any state. The caller scopes the turns to one session.
    """
    if flt.turn_id is not None:
        return turn_id == flt.turn_id
    if flt.client_id is not None:
        return client_id == flt.client_id
    if flt.all:
        return True
    return client_id == requester_client_id
