"""Sessions, membership, turns, the conversation tree, held cancels and the event archive.

State changes go through `services/`; the turn state machine lives in services/turns.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import models


class Policy(models.TextChoices):
    """What a send does while other turns of the session are active (double texting)."""

    CONCURRENT = "concurrent", "Run alongside"
    QUEUE = "queue", "Queue"
    INTERRUPT = "interrupt", "Interrupt (cancel own, then send)"
    REJECT = "reject", "Reject while busy"


class TurnStatus(models.TextChoices):
    """`queued` -> `active` -> one of the end reasons."""

    QUEUED = "queued", "Queued"
    ACTIVE = "active", "Active"
    COMPLETE = "complete", "Complete"
    CANCELLED = "cancelled", "Cancelled"
    ERROR = "error", "Error"


IN_FLIGHT = (TurnStatus.QUEUED, TurnStatus.ACTIVE)


class NodeStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    STREAMING = "streaming", "Streaming"
    COMPLETE = "complete", "Complete"
    CANCELLED = "cancelled", "Cancelled"
    ERROR = "error", "Error"


class Role(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"
    SYSTEM = "system", "System"


class ChatSession(models.Model):
    """A conversation shared by its members."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_chat_sessions")
    members = models.ManyToManyField(  # type: ignore[var-annotated]
        settings.AUTH_USER_MODEL, through="Membership", related_name="chat_sessions"
    )
    model = models.CharField(max_length=100, default="demo", help_text="e.g. demo, openai:gpt-4.1-mini")
    model_options = models.JSONField(default=dict, blank=True, help_text="Options passed to the model.")
    policy = models.CharField(
        max_length=16,
        choices=Policy.choices,
        default=Policy.CONCURRENT,
        help_text="Default double-texting policy; a send may name its own.",
    )
    agents = models.JSONField(
        default=list,
        blank=True,
        help_text='Names of configured agents (SESSIONS_APP["AGENTS"]) added to this session, e.g. ["panel"]; '
        "each acts with the clientId agent:<name>. Read with the session's row, so a send pays no query for it.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name = "chat session"

    def __str__(self) -> str:
        return self.title or str(self.id)


class Membership(models.Model):
    class MemberRole(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_memberships")
    role = models.CharField(max_length=8, choices=MemberRole.choices, default=MemberRole.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} in {self.session}"


class MessageNode(models.Model):
    """A node of the conversation tree. Siblings share a parent; the model's context for a
    turn is the path from the root to the turn's user message."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="nodes")
    node_id = models.CharField(max_length=100, help_text="Public id, chosen by the client for user messages.")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="children")
    role = models.CharField(max_length=16, choices=Role.choices)
    parts = models.JSONField(default=list, help_text='[{"type": "text", "text": ...}, ...]')
    turn = models.ForeignKey("Turn", null=True, blank=True, on_delete=models.SET_NULL, related_name="nodes")
    client_id = models.CharField(max_length=150, help_text="Who wrote it (the turn's owner for answers).")
    fork_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="forks",
        help_text="The node this one edits (user) or regenerates (assistant).",
    )
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.COMPLETE)
    content_seq = models.BigIntegerField(
        default=0, help_text="Seq of the last delta included in `parts` (clients skip older deltas)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "node_id"], name="unique_node_id")]
        indexes = [models.Index(fields=["session", "-id"], name="node_session_newest")]

    def __str__(self) -> str:
        return f"{self.role} {self.node_id}"

    @property
    def text(self) -> str:
        return "".join(p.get("text", "") for p in self.parts if p.get("type") == "text")


class Turn(models.Model):
    """One request-response cycle, run by a Celery worker."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="turns")
    turn_id = models.CharField(max_length=100, help_text="Public id, client-chosen or a server UUID.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,  # the session's history outlives a member's account
        related_name="chat_turns",
        help_text="The user who sent it; for an agent's turn, the user it works for (none once deleted).",
    )
    client_id = models.CharField(max_length=150, help_text="The owner's clientId (username, or agent:<name>).")
    status = models.CharField(max_length=16, choices=TurnStatus.choices, default=TurnStatus.ACTIVE)
    policy = models.CharField(max_length=16, choices=Policy.choices, default=Policy.CONCURRENT)
    user_message = models.ForeignKey(MessageNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    assistant_message = models.ForeignKey(
        MessageNode, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    model = models.CharField(max_length=100, default="demo", help_text="A model, or agent:<name> for an agent's turn.")
    model_options = models.JSONField(default=dict, blank=True)
    parent_turn = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="child_turns",
        help_text="The orchestrating turn this sub-agent turn works for: cancelling it cancels this one.",
    )
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    worker_id = models.CharField(max_length=200, blank=True, help_text="The worker process that claimed the turn.")
    cancel_requested_by = models.CharField(
        max_length=150, blank=True, help_text="clientId whose cancel was accepted (once only)."
    )
    usage = models.JSONField(default=dict, blank=True, help_text="Input/output tokens reported by the model.")
    finish_reason = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "turn_id"], name="unique_turn_id")]
        indexes = [
            models.Index(fields=["session", "status"], name="turn_session_status"),
            models.Index(fields=["status", "worker_id"], name="turn_status_worker"),
        ]

    def __str__(self) -> str:
        return f"turn {self.turn_id} ({self.status})"

    @property
    def is_ended(self) -> bool:
        return self.status not in IN_FLIGHT

    @property
    def reason(self) -> str | None:
        return None if not self.is_ended else self.status


def oldest_first(turns: Iterable[Turn]) -> list[Turn]:
    """Turns in creation order, sorted in Python rather than by the query. For reads of a
    session's turns in flight: with `ORDER BY id` beside `status IN (queued, active)`,
    SQLite reads the session's turns through the session index (already in id order) and
    filters every turn the session ever had, instead of looking up the few in flight
    through (session, status). A session's 1,000th send then cost ~0.1 ms more per read,
    growing with the session."""
    return sorted(turns, key=lambda turn: turn.pk)


class HeldCancel(models.Model):
    """A cancel for a turnId the server has not seen yet, applied when that turn is created."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="held_cancels")
    turn_id = models.CharField(max_length=100)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "turn_id"], name="unique_held_cancel")]

    def __str__(self) -> str:
        return f"held cancel of {self.turn_id}"


class EventRecord(models.Model):
    """The durable archive of a session's events (the live log is in Redis). Written in
    batches after the events were published; read when a client resumes from further back
    than the live log keeps."""

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="events")
    seq = models.BigIntegerField()
    type = models.CharField(max_length=32)
    frame = models.TextField(help_text="The event exactly as sent to clients (JSON).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="unique_event_seq")]

    def __str__(self) -> str:
        return f"{self.seq} {self.type}"


def node_payload(node: MessageNode, *, turn_id: str | None = None) -> dict[str, Any]:
    """The protocol's message node."""
    return {
        "id": node.node_id,
        "parent": node.parent.node_id if node.parent_id and node.parent else None,
        "role": node.role,
        "parts": node.parts,
        "turnId": turn_id,
        "clientId": node.client_id,
        "forkOf": node.fork_of.node_id if node.fork_of_id and node.fork_of else None,
        "status": node.status,
        "contentSeq": node.content_seq,
        "createdAt": int(node.created_at.timestamp() * 1000) if node.created_at else None,
    }
