"""Production is safe by default: without DJANGO_SETTINGS_MODULE the entry points load the
production settings, which refuse to start without a real SECRET_KEY and ALLOWED_HOSTS and
pass `check --deploy`; the websocket's Origin check compares scheme, host and port."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
GOOD_KEY = "k" * 20 + "-Q7v!x@2#LmZp9$Rt4&Wy8*Ns3^Bf6%Hd1"


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS")}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def settings_value(module: str, expression: str, **env: str) -> subprocess.CompletedProcess[str]:
    code = (
        f"import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = {module!r}; "
        f"from django.conf import settings; print(({expression}))"
    )
    return run(["-c", code], **env)


def test_manage_py_defaults_to_the_production_settings():
    refused = run(["manage.py", "check"])
    assert refused.returncode != 0
    assert "SECRET_KEY" in refused.stderr


def test_asgi_and_celery_default_to_the_production_settings():
    for module in ("config.asgi", "config.celery_app"):
        code = f"import {module}, os; print(os.environ['DJANGO_SETTINGS_MODULE'])"
        result = run(["-c", code], SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="chat.example.com")
        assert result.stdout.strip().splitlines()[-1] == "config.settings.production", result.stderr


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"ALLOWED_HOSTS": "chat.example.com"}, "SECRET_KEY"),
        ({"SECRET_KEY": "insecure-dev-key-change-me", "ALLOWED_HOSTS": "chat.example.com"}, "SECRET_KEY"),
        ({"SECRET_KEY": "short", "ALLOWED_HOSTS": "chat.example.com"}, "SECRET_KEY"),
        ({"SECRET_KEY": GOOD_KEY}, "ALLOWED_HOSTS"),
        ({"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
    ],
)
def test_production_refuses_to_start_without_a_real_key_and_hosts(env, complaint):
    result = settings_value("config.settings.production", "settings.DEBUG", **env)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_check_deploy_is_clean_with_the_production_settings():
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY=GOOD_KEY,
        ALLOWED_HOSTS="chat.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_trusts_x_forwarded_proto_only_when_told_to():
    expression = (
        "settings.SECURE_PROXY_SSL_HEADER, settings.SESSIONS_APP['ALLOW_QUERY_TOKEN'], "
        "settings.SECURE_HSTS_SECONDS > 0, settings.SECURE_SSL_REDIRECT"
    )
    base = {"SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "chat.example.com"}
    plain = settings_value("config.settings.production", expression, **base)
    behind_proxy = settings_value("config.settings.production", expression, **base, TRUST_X_FORWARDED_PROTO="true")
    assert plain.stdout.strip() == "(None, False, True, True)", plain.stderr
    assert behind_proxy.stdout.strip() == "(('HTTP_X_FORWARDED_PROTO', 'https'), False, True, True)", (
        behind_proxy.stderr
    )


# --- the websocket's Origin check ------------------------------------------------------------


def scope(origin: str | None, host: str = "chat.example.com", scheme: str = "wss", **extra: Any) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        ("https://chat.example.com", "chat.example.com", "wss", True),
        ("http://chat.example.com", "chat.example.com", "wss", False),  # scheme
        ("https://chat.example.com:8443", "chat.example.com", "wss", False),  # port
        ("https://chat.example.com:8443", "chat.example.com:8443", "wss", True),
        ("http://chat.example.com:8000", "chat.example.com:8000", "ws", True),
        ("http://chat.example.com:8001", "chat.example.com:8000", "ws", False),
        ("https://evil.example.net", "chat.example.com", "wss", False),
        ("https://evil.example.net", "evil.example.net", "wss", False),  # host not allowed
        ("https://app.partner.org", "chat.example.com", "wss", True),  # CSRF_TRUSTED_ORIGINS
        ("https://app.partner.org:444", "chat.example.com", "wss", False),
        ("http://app.partner.org", "chat.example.com", "wss", False),
        ("https://x.trusted.org", "chat.example.com", "wss", True),  # wildcard subdomain
        ("null", "chat.example.com", "wss", False),
        ("not a url", "chat.example.com", "wss", False),
        (None, "chat.example.com", "wss", True),  # a script, not a browser
    ],
)
def test_the_websocket_origin_check_compares_scheme_host_and_port(settings, origin, host, scheme, allowed):
    from sessions_app.web.auth import origin_allowed

    settings.ALLOWED_HOSTS = ["chat.example.com", ".example.com"]
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.partner.org", "https://*.trusted.org"]
    settings.DEBUG = False
    assert origin_allowed(scope(origin, host, scheme)) is allowed


def test_behind_a_tls_proxy_the_forwarded_scheme_counts_only_when_configured(settings):
    from sessions_app.web.auth import origin_allowed

    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    forwarded = scope("https://chat.example.com", scheme="ws", **{"x-forwarded-proto": "https"})
    settings.SECURE_PROXY_SSL_HEADER = None
    assert origin_allowed(forwarded) is False
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(forwarded) is True
