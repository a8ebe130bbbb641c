"""Django admin for sessions, turns, the tree, held cancels and the event archive. The
"cancel selected turns" action goes through the same service as the API."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from sessions_app.cancellation.services import turns_cancel
from sessions_app.models import ChatSession, EventRecord, HeldCancel, Membership, MessageNode, Turn
from sessions_app.schemas import CancelFilter


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "owner", "model", "policy", "created_at", "updated_at"]
    list_filter = ["policy", "model", "created_at"]
    search_fields = ["title", "id", "owner__username"]
    raw_id_fields = ["owner"]
    inlines = [MembershipInline]
    date_hierarchy = "created_at"


@admin.register(Turn)
class TurnAdmin(admin.ModelAdmin):
    list_display = [
        "turn_id",
        "session",
        "client_id",
        "status",
        "policy",
        "model",
        "error_code",
        "finish_reason",
        "usage",
        "created_at",
        "ended_at",
    ]
    list_filter = ["status", "policy", "model", "error_code"]
    search_fields = ["turn_id", "client_id", "session__title", "session__id"]
    raw_id_fields = ["session", "user", "user_message", "assistant_message"]
    readonly_fields = ["worker_id", "cancel_requested_by", "usage", "finish_reason", "started_at", "ended_at"]
    actions = ["cancel_turns"]
    list_select_related = ["session"]

    @admin.action(description="Cancel selected turns")
    def cancel_turns(self, request: HttpRequest, queryset: QuerySet[Turn]) -> None:
        cancelled = 0
        for turn in queryset.filter(status__in=["queued", "active"]):
            outcome = turns_cancel(
                session_id=turn.session_id,
                user=request.user,  # type: ignore[arg-type]  # staff only: admin requires login
                flt=CancelFilter(turn_id=turn.turn_id),
                as_admin=True,
            )
            cancelled += len(outcome.cancelled)
        self.message_user(request, f"Cancelled {cancelled} turn(s).", messages.SUCCESS)


@admin.register(MessageNode)
class MessageNodeAdmin(admin.ModelAdmin):
    list_display = ["node_id", "session", "role", "status", "client_id", "parent", "created_at"]
    list_filter = ["role", "status"]
    search_fields = ["node_id", "client_id", "session__title", "session__id"]
    raw_id_fields = ["session", "parent", "turn", "fork_of"]
    list_select_related = ["session", "parent"]


@admin.register(HeldCancel)
class HeldCancelAdmin(admin.ModelAdmin):
    list_display = ["turn_id", "session", "requested_by", "created_at", "expires_at"]
    search_fields = ["turn_id"]
    raw_id_fields = ["session", "requested_by"]


@admin.register(EventRecord)
class EventRecordAdmin(admin.ModelAdmin):
    list_display = ["seq", "type", "session", "created_at"]
    list_filter = ["type"]
    search_fields = ["session__id"]
    readonly_fields = ["session", "seq", "type", "frame", "created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
