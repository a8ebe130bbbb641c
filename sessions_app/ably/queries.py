"""The database reads the mirror needs (sync; the mirror calls them through `db()`), and
the one write it makes: a cancel, through the cancellation service like any other."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from pydantic import ValidationError

from sessions_app.cancellation.services import turns_cancel
from sessions_app.errors import ChatError
from sessions_app.models import EventRecord, MessageNode, Role
from sessions_app.schemas import CancelFilter
from sessions_app.sessions.services import require_member

logger = logging.getLogger(__name__)


def archived_events(session_id: str, after: int, until: int, limit: int) -> list[dict[str, Any]]:
    """Events after < seq <= until from the archive (every event but deltas), in order."""
    frames = (
        EventRecord.objects.filter(session_id=uuid.UUID(session_id), seq__gt=after, seq__lte=until)
        .order_by("seq")
        .values_list("frame", flat=True)[:limit]
    )
    return [json.loads(frame) for frame in frames]


def final_parts(session_id: str, message_id: str | None) -> list[dict[str, Any]]:
    """An answer's parts as saved when its turn ended (empty if it is gone)."""
    if not message_id:
        return []
    node = MessageNode.objects.filter(session_id=uuid.UUID(session_id), node_id=message_id).only("parts").first()
    return list(node.parts) if node is not None else []


def cancel_from_ably(
    *,
    session_id: str,
    client_id: str,
    run_id: str | None = None,
    input_message_id: str | None = None,
    filter_json: str | None = None,
) -> str:
    """Apply an `ai-cancel` published by `client_id` (Ably verified it: the token we gave
    that member carries it). Returns what happened: "applied", "held" (a turn not created
    yet), "unknown-input" (no such user message yet: the caller holds it), or "ignored"
    (not a member, or nothing to cancel by)."""
    user = get_user_model().objects.filter(username=client_id, is_active=True).first()
    if user is None:
        logger.warning("ably: ai-cancel on %s from %r, who is no user: ignored", session_id, client_id)
        return "ignored"
    try:
        require_member(session_id=session_id, user=user)
        if filter_json:
            flt = CancelFilter.model_validate(json.loads(filter_json))
        elif run_id:
            flt = CancelFilter.model_validate({"turnId": run_id})
        elif input_message_id:
            node = (
                MessageNode.objects.filter(session_id=uuid.UUID(session_id), node_id=input_message_id, role=Role.USER)
                .select_related("turn")
                .first()
            )
            if node is None or node.turn is None:
                return "unknown-input"
            flt = CancelFilter.model_validate({"turnId": node.turn.turn_id})
        else:
            return "ignored"
        outcome = turns_cancel(session_id=session_id, user=user, flt=flt)
    except ChatError as exc:
        logger.warning("ably: ai-cancel on %s from %r refused: %s", session_id, client_id, exc)
        return "ignored"
    except (ValidationError, ValueError) as exc:
        logger.warning("ably: malformed ai-cancel on %s from %r: %s", session_id, client_id, exc)
        return "ignored"
    return "held" if outcome.pending else "applied"
