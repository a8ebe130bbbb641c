"""A session's transcript: the conversation as the chat page shows it, read-only, as a page
or as a Markdown or plain-text download.

It is also the worked example of docs/extending.md ("how to add your own view"): a site
view needs no more than this. It checks membership with the service the chat page uses
(`require_member`), reads with a selector (`snapshot_rows`, the nodes a device's snapshot
starts from) and shapes the result for a template; it writes nothing and runs no query of
its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils.http import content_disposition_header
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from sessions_app.errors import Forbidden, NotFound
from sessions_app.models import ChatSession, MessageNode, NodeStatus, Role
from sessions_app.sessions import selectors
from sessions_app.sessions.services import require_member
from sessions_app.tree import timeline

# The chat page's labels of an answer that did not (yet) complete (static/chat/messages-view.js).
STATUS_LABELS: dict[str, str] = {
    NodeStatus.QUEUED: "Queued",
    NodeStatus.STREAMING: "Answering…",
    NodeStatus.CANCELLED: "Stopped",
    NodeStatus.ERROR: "Failed",
}

# ?format= -> (content type, file extension) of the downloads; no format is the HTML page.
DOWNLOADS: dict[str, tuple[str, str]] = {
    "md": ("text/markdown; charset=utf-8", "md"),
    "txt": ("text/plain; charset=utf-8", "txt"),
}


@dataclass(frozen=True)
class Entry:
    """One message of the transcript, as a reader sees it: who wrote it and what."""

    node_id: str
    role: str
    author: str
    text: str
    status: str
    label: str  # "" for a complete message
    created_at: datetime


def entry(node: MessageNode) -> Entry:
    """A node with its author named as the chat names it: a user message by its writer's
    clientId (username), an answer as the assistant's for the user whose turn it was."""
    if node.role == Role.USER:
        author = node.client_id
    elif node.role == Role.ASSISTANT:
        author = f"Assistant · for {node.client_id}" if node.client_id else "Assistant"
    else:
        author = "System"
    label = STATUS_LABELS.get(node.status, "") if node.role == Role.ASSISTANT else ""
    return Entry(node.node_id, node.role, author, node.text, node.status, label, node.created_at)


def as_text(session: ChatSession, entries: list[Entry], *, markdown: bool) -> str:
    """The download: a heading per message (author, time, what became of an unfinished
    answer), then its text as written. Answers are Markdown already, so the Markdown form
    leaves every text as it is; the plain form differs only in its headings."""
    title = session.title or "Untitled"
    lines = [f"# {title}" if markdown else f"{title}\n{'=' * len(title)}", ""]
    for item in entries:
        when = item.created_at.strftime("%Y-%m-%d %H:%M UTC")
        heading = f"{item.author} · {when}" + (f" · {item.label}" if item.label else "")
        lines += [f"## {heading}" if markdown else f"{heading}:", "", item.text, ""]
    return "\n".join(lines)


@require_safe
@login_required
@never_cache
def transcript(request: HttpRequest, session_id: uuid.UUID) -> HttpResponse:
    """GET /sessions/<uuid>/transcript[?format=md|txt]. A non-member gets the same 404 as
    for a missing session (as on the chat page); the anonymous are sent to log in."""
    try:
        session = require_member(session_id=session_id, user=request.user)  # type: ignore[arg-type]
    except (NotFound, Forbidden) as exc:
        raise Http404("no such session") from exc
    nodes, _turns, _active = selectors.snapshot_rows(session_id=str(session.pk))
    # The conversation as the chat page shows it: every concurrent exchange, the newest
    # versions, in the order sent (tree.timeline; decision 021).
    entries = [entry(node) for node in timeline(nodes)]
    fmt = request.GET.get("format", "")
    if not fmt:
        return render(request, "sessions_app/transcript.html", {"session": session, "entries": entries})
    if fmt not in DOWNLOADS:
        return HttpResponseBadRequest(f"format is one of {', '.join(DOWNLOADS)}", content_type="text/plain")
    content_type, extension = DOWNLOADS[fmt]
    response = HttpResponse(as_text(session, entries, markdown=fmt == "md"), content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, f"transcript-{session.pk}.{extension}")
    return response
