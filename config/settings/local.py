"""Settings for `make run` and local development: SQLite unless DATABASE_URL, the example
agents on.

DEBUG stays off, as in base.py, unless DEBUG=true (in the environment or .env): the product
as `make run` runs it is the product as deployed, not a debug server (decision 041). With
DEBUG on, Django shows its technical error pages (tracebacks and settings, to whoever can
reach the port) and records and logs every SQL statement, with its values quoted by a
second query on SQLite: a lone HTTP send took ~12% longer, a session's creation, a cancel
and a first token 2-7%.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import SESSIONS_APP, env

# `make run` ships the example agents (a panel of a researcher and a critic, on the demo
# model; docs/agents.md): add the agent "panel" to a session to try them. CHAT_AGENTS=""
# switches them off.
SESSIONS_APP = {**SESSIONS_APP, "AGENTS": env("CHAT_AGENTS", default="example")}
