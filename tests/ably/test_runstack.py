"""`make run` starts the mirror beside Daphne and the worker only when Ably is configured:
ABLY_API_KEY in the environment, or in .env (which the settings read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import runstack


def test_the_mirror_runs_only_with_an_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runstack, "ROOT", tmp_path)
    assert not runstack.ably_configured({})
    assert runstack.ably_configured({"ABLY_API_KEY": "app.key:secret"})
    (tmp_path / ".env").write_text("DEBUG=true\nABLY_API_KEY=\n")
    assert not runstack.ably_configured({})
    (tmp_path / ".env").write_text("ABLY_API_KEY=app.key:secret\n")
    assert runstack.ably_configured({})
    assert runstack.mirror_command()[-1] == "ably_mirror"
