"""Start a turn on behalf of an agent, from a script (docs/agents.md):

    manage.py agent_turn <session id> researcher --prompt "What changed in 5.2?" --wait 60

prints the turn as a send answers it (turnId, clientId `agent:<name>`, status, message ids),
as JSON; with --wait, waits for its end and prints its reason and answer too.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sessions_app.agents.services import agent_turn_start, session_agent_add
from sessions_app.errors import ChatError
from sessions_app.models import IN_FLIGHT, ChatSession, Turn

POLL_SECONDS = 0.25


class Command(BaseCommand):
    help = "Start a turn for a configured agent in a session; it streams to every device of the session."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("session", help="the session's id")
        parser.add_argument("agent", help="the agent's name (SESSIONS_APP['AGENTS'])")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--prompt", help="what the agent is asked (added to the tree as its message)")
        what.add_argument("--reply-to", help="the id of a user message the agent answers")
        parser.add_argument("--turn-id", help="the turn's id (unique in the session; default: a new UUID)")
        parser.add_argument("--parent-turn", help="the turnId of a turn in flight this turn works for")
        parser.add_argument("--policy", help="concurrent (default), queue, interrupt or reject")
        parser.add_argument("--as", dest="username", help="the member the agent works for (default: the owner)")
        parser.add_argument("--add", action="store_true", help="add the agent to the session first")
        parser.add_argument("--wait", type=float, default=0, help="wait up to this many seconds for the end")

    def handle(self, *args: Any, **options: Any) -> None:
        user = None
        if options["username"]:
            user = get_user_model().objects.filter(username=options["username"]).first()
            if user is None:
                raise CommandError(f"no user named {options['username']!r}")
        try:
            if options["add"]:
                session = ChatSession.objects.select_related("owner").filter(pk=options["session"]).first()
                if session is None:
                    raise CommandError("no such session")
                session_agent_add(session_id=session.pk, by=session.owner, name=options["agent"])
            result = agent_turn_start(
                session_id=options["session"],
                agent=options["agent"],
                prompt=options["prompt"],
                reply_to=options["reply_to"],
                turn_id=options["turn_id"],
                parent_turn=options["parent_turn"],
                policy=options["policy"],
                user=user,
            )
        except ChatError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from exc
        answer: dict[str, Any] = result.as_dict()
        if options["wait"] > 0:
            answer.update(_wait(result.turn.pk, options["wait"]))
        self.stdout.write(json.dumps(answer))


def _wait(turn_pk: int, timeout: float) -> dict[str, Any]:
    """The turn's end (reason, error, answer), or timedOut. A script's wait: it polls."""
    deadline = time.monotonic() + timeout
    while True:
        turn = Turn.objects.select_related("assistant_message").get(pk=turn_pk)
        if turn.status not in IN_FLIGHT:
            return {
                "status": turn.status,
                "reason": turn.reason,
                "error": {"code": turn.error_code, "message": turn.error_message} if turn.error_code else None,
                "content": turn.assistant_message.text if turn.assistant_message else "",
            }
        if time.monotonic() >= deadline:
            return {"timedOut": True}
        time.sleep(POLL_SECONDS)
