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
    answer = run_python("from sessions_app.web.http_entry import http_application\nhttp_application()\n" + code)
    answer.check_returncode()
    return answer.stdout.strip().splitlines()


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`code` run by a Python process of its own under the test settings (and `env`)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
