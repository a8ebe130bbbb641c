"""Settings for `make run` and local development: debug on, SQLite unless DATABASE_URL."""

from config.settings.base import *  # noqa: F403
from config.settings.base import SESSIONS_APP, env

DEBUG = env.bool("DEBUG", default=True)
# `make run` ships the example agents (a panel of a researcher and a critic, on the demo
# model; docs/agents.md): add the agent "panel" to a session to try them. CHAT_AGENTS=""
# switches them off.
SESSIONS_APP = {**SESSIONS_APP, "AGENTS": env("CHAT_AGENTS", default="example")}
