"""Python run in a process of its own, set up as a web process is (`http_application()`
under the test settings): for what a server's start-up changes in Django, which the test
process itself must not see changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lines_printed_by_a_web_process(code: str) -> list[str]:
    """The lines `code` prints, run after the web process's start-up."""
    script = "from sessions_app.web.http_entry import http_application\nhttp_application()\n" + code
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    answer = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return answer.stdout.strip().splitlines()
