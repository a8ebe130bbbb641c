"""Example hooks a site can name in settings.

SESSIONS_APP = {"ON_ABORT": "sessions_app.hooks.append_cancelled_notice"}
"""

from collections.abc import Callable

from sessions_app.turns.types import ClaimedTurn


def append_cancelled_notice(write: Callable[[str], None], turn: ClaimedTurn) -> None:
    """onAbort: end a cancelled answer with a visible notice."""
    write("\n[Response cancelled]")
