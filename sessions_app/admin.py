"""Django admin: what an operator may see and do, without ever writing state by hand.

Every field of a session, a turn, a message or an event is read-only here: a turn's status,
a message's parts and the numbering of events belong to the services and the workers, and a
form saving a stale copy of a row over a turn that is streaming would corrupt it. What an
operator may change goes through the services, as actions that need the model's *change*
permission (a view-only staff user sees the buttons' pages but cannot run them):

- cancel turns (`turns_cancel`, as the session's members would, the authoriser bypassed);
- end a stuck turn (`turn_end_stuck`: an active turn whose worker hangs ends `error`);
- delete sessions (`session_delete`, as their owner would: their turns stop and every device
  hears of it), with the model's *delete* permission;
- delete users: the sessions they own go as their deletion would (the user admin lets them).

A session's page shows its transcript: every message in the order it was written.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.exceptions import NotRegistered
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from sessions_app.cancellation.services import turns_cancel
from sessions_app.errors import NotFound
from sessions_app.models import (
    IN_FLIGHT,
    ChatSession,
    EventRecord,
    HeldCancel,
    Membership,
    MessageNode,
    Turn,
    TurnStatus,
)
from sessions_app.schemas import CancelFilter
from sessions_app.sessions.services import session_delete
from sessions_app.turns.running import turn_end_stuck

EXCERPT = 120  # characters of a message shown in lists


def excerpt(text: str, limit: int = EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every field read-only, nothing added here, and nothing saved from a form."""

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        own = [f.name for f in self.model._meta.fields]
        return [*own, *[name for name in super().get_readonly_fields(request, obj) if name not in own]]

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Never: a row written back from the admin could undo what a worker wrote meanwhile."""


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "joined_at")
    readonly_fields = ("user", "role", "joined_at")
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # members join by the owner's invitation, which every device hears of


@admin.register(ChatSession)
class ChatSessionAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "owner", "model", "policy", "created_at", "updated_at"]
    list_filter = ["policy", "model", "created_at"]
    search_fields = ["title", "id", "owner__username"]
    readonly_fields = ["transcript"]
    inlines = [MembershipInline]
    date_hierarchy = "created_at"
    list_select_related = ["owner"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # settings are the owner's, in the app (session.updated reaches every device)

    # --- deleting: through the service, never a bare cascade ---------------------------------

    def delete_model(self, request: HttpRequest, obj: ChatSession) -> None:
        """A bare delete would leave its turns streaming and its devices connected."""
        with contextlib.suppress(NotFound):  # deleted meanwhile (its owner, another operator)
            session_delete(session=obj, by=request.user, as_admin=True)  # type: ignore[arg-type]  # staff: logged in

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ChatSession]) -> None:
        """The list's "Delete selected" action: each session as `delete_model` deletes it."""
        for session in queryset:
            self.delete_model(request, session)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
        """The confirmation page: a session's turns, messages and events go with it through
        the service, so their own admins' refusal to delete them one by one does not apply."""
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    @admin.display(description="Transcript")
    def transcript(self, session: ChatSession) -> SafeString:
        """Every message in the order it was written, edits and regenerations included,
        each marked with what it is; text as written (never rendered as HTML)."""
        nodes = list(session.nodes.select_related("turn", "fork_of", "parent").order_by("pk"))
        if not nodes:
            return format_html("<p>{}</p>", "No messages yet.")
        rows = format_html_join(
            "",
            '<tr><td>{}</td><td><a href="{}">{}</a></td><td>{}</td><td style="white-space: pre-wrap">{}</td></tr>',
            (
                (
                    node.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    reverse("admin:sessions_app_messagenode_change", args=[node.pk]),
                    _author(node),
                    _what(node),
                    node.text or "—",
                )
                for node in nodes
            ),
        )
        return format_html(
            "<table><thead><tr><th>When</th><th>Who</th><th>What</th><th>Text</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            rows,
        )


def _author(node: MessageNode) -> str:
    if node.role == "assistant":
        return f"Assistant for {node.client_id}" if node.client_id else "Assistant"
    return node.client_id or node.role


def _what(node: MessageNode) -> str:
    parts = []
    if node.fork_of is not None:
        parts.append(f"{'regenerates' if node.role == 'assistant' else 'edits'} {node.fork_of.node_id}")
    if node.parent is not None and node.role == "user" and node.parent.role == "assistant":
        parts.append(f"after {node.parent.node_id}")
    if node.role == "assistant" and node.status != "complete":
        parts.append(node.status)
    if node.turn is not None:
        parts.append(f"turn {node.turn.turn_id}")
    return " · ".join(parts)


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin):
    list_display = [
        "turn_id",
        "session",
        "client_id",
        "status",
        "question",
        "policy",
        "model",
        "error_code",
        "created_at",
        "ended_at",
    ]
    list_filter = ["status", "policy", "model", "error_code"]
    search_fields = ["turn_id", "client_id", "session__title", "session__id"]
    readonly_fields = ["question", "answer"]
    actions = ["cancel_turns", "end_stuck_turns"]
    list_select_related = ["session", "user_message"]
    change_form_template = "admin/sessions_app/turn/change_form.html"

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # a turn's messages, events and answer refer to it

    @admin.display(description="Question")
    def question(self, turn: Turn) -> str:
        return excerpt(turn.user_message.text) if turn.user_message else "—"

    @admin.display(description="Answer")
    def answer(self, turn: Turn) -> str:
        return turn.assistant_message.text if turn.assistant_message else "—"

    @admin.action(description="Cancel selected turns", permissions=["change"])
    def cancel_turns(self, request: HttpRequest, queryset: QuerySet[Turn]) -> None:
        cancelled = sum(self._cancel(request, turn) for turn in queryset.filter(status__in=IN_FLIGHT))
        self.message_user(request, f"Cancelled {cancelled} turn(s).", messages.SUCCESS)

    @admin.action(description="End selected stuck turns (error: ended by an operator)", permissions=["change"])
    def end_stuck_turns(self, request: HttpRequest, queryset: QuerySet[Turn]) -> None:
        ended = sum(self._end_stuck(request, turn) for turn in queryset.filter(status=TurnStatus.ACTIVE))
        self.message_user(request, f"Ended {ended} stuck turn(s).", messages.SUCCESS)

    def _cancel(self, request: HttpRequest, turn: Turn) -> int:
        outcome = turns_cancel(
            session_id=turn.session_id,
            user=request.user,  # type: ignore[arg-type]  # staff only: admin requires login
            flt=CancelFilter(turn_id=turn.turn_id),
            as_admin=True,
        )
        if outcome.cancelled:
            self.log_change(request, turn, "Cancelled from the admin.")
        return len(outcome.cancelled)

    def _end_stuck(self, request: HttpRequest, turn: Turn) -> int:
        if not turn_end_stuck(turn_pk=turn.pk, by=request.user.get_username()):
            return 0
        self.log_change(request, turn, "Ended as stuck from the admin.")
        return 1

    # --- the buttons on a turn's own page ---------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name="sessions_app_turn_cancel",
            ),
            path(
                "<int:pk>/end-stuck/",
                self.admin_site.admin_view(require_POST(self.end_stuck_view)),
                name="sessions_app_turn_end_stuck",
            ),
        ]
        return own + super().get_urls()

    def _allowed(self, request: HttpRequest, pk: int) -> Turn:
        turn = get_object_or_404(Turn, pk=pk)
        if not self.has_change_permission(request, turn):
            raise PermissionDenied
        return turn

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        turn = self._allowed(request, pk)
        if self._cancel(request, turn):
            self.message_user(request, f"Turn {turn.turn_id} is being cancelled.", messages.SUCCESS)
        else:
            self.message_user(request, f"Turn {turn.turn_id} had already ended.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:sessions_app_turn_change", args=[turn.pk]))

    def end_stuck_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        turn = self._allowed(request, pk)
        if self._end_stuck(request, turn):
            self.message_user(request, f"Turn {turn.turn_id} ended as stuck.", messages.SUCCESS)
        else:
            self.message_user(request, f"Turn {turn.turn_id} is not active.", messages.WARNING)
        return HttpResponseRedirect(reverse("admin:sessions_app_turn_change", args=[turn.pk]))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        turn = self.get_object(request, object_id)
        context = {
            **(extra_context or {}),
            # Nothing here is editable: no Save buttons; the service actions instead.
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "can_act": turn is not None and self.has_change_permission(request, turn),
            "in_flight": turn is not None and turn.status in IN_FLIGHT,
            "active": turn is not None and turn.status == TurnStatus.ACTIVE,
        }
        return super().change_view(request, object_id, form_url, context)


@admin.register(MessageNode)
class MessageNodeAdmin(ReadOnlyAdmin):
    list_display = ["node_id", "session", "role", "client_id", "status", "text_excerpt", "created_at"]
    list_filter = ["role", "status"]
    search_fields = ["node_id", "client_id", "session__title", "session__id"]
    readonly_fields = ["text"]
    list_select_related = ["session"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # a message's answers and versions hang below it in the tree

    @admin.display(description="Text")
    def text_excerpt(self, node: MessageNode) -> str:
        return excerpt(node.text) or "—"

    @admin.display(description="Text as written")
    def text(self, node: MessageNode) -> str:
        return node.text


@admin.register(HeldCancel)
class HeldCancelAdmin(ReadOnlyAdmin):
    list_display = ["turn_id", "session", "requested_by", "created_at", "expires_at"]
    search_fields = ["turn_id"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(EventRecord)
class EventRecordAdmin(ReadOnlyAdmin):
    list_display = ["seq", "type", "session", "created_at"]
    list_filter = ["type"]
    search_fields = ["session__id"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # the archive a resuming device reads


# --- a user's account: it takes the sessions it owns with it ---------------------------------

# What goes with a deleted user's sessions, which their own admins never delete one by one.
_GOING_WITH_SESSIONS = {str(model._meta.verbose_name) for model in (Turn, MessageNode, EventRecord)}


def _let_users_go_with_their_sessions() -> None:
    """Django's user admin refuses to delete a user who owns a session with turns, messages
    or events in it: the admins of those refuse to delete them one by one. The sessions go
    through the product's deletion however their rows go (sessions/services._session_going:
    their turns stop, every device hears `session.deleted`), so an operator who may delete
    users (and sessions) may delete such a user. The user model's admin, whichever is
    registered (a project's own included, from an app listed before this one), is kept
    with that one refusal lifted."""
    user_model = get_user_model()
    try:
        registered = admin.site.get_model_admin(user_model)
    except NotRegistered:
        return

    class UserAdmin(type(registered)):  # type: ignore[misc]
        def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[Any, ...]:
            deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
            return deleted, counts, perms_needed - _GOING_WITH_SESSIONS, protected

    UserAdmin.__name__ = UserAdmin.__qualname__ = type(registered).__name__
    admin.site.unregister(user_model)
    admin.site.register(user_model, UserAdmin)


_let_users_go_with_their_sessions()
