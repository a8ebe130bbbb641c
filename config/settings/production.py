"""Production settings, the default of manage.py, config/asgi.py and the Celery app when
DJANGO_SETTINGS_MODULE is not set. They refuse to start without a real SECRET_KEY and
ALLOWED_HOSTS, and pass `manage.py check --deploy` (docs/security.md, docs/deployment.md).

Behind a proxy that terminates TLS, set TRUST_X_FORWARDED_PROTO=true (and have the proxy
set X-Forwarded-Proto itself, overwriting any the client sent); otherwise Django does not
believe the header, as a client could send it.
"""

from django.core.exceptions import ImproperlyConfigured

from config.settings.base import *  # noqa: F403
from config.settings.base import SESSIONS_APP, env

DEBUG = False

SECRET_KEY = env("SECRET_KEY", default="")
# The base settings' fallback, Django's generated keys for development and anything short
# are not secrets (Django's own deploy check: at least 50 characters, 5 distinct).
if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith(("django-insecure", "insecure-")):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random secret of at least 50 characters in production, e.g. "
        '`python -c "import secrets; print(secrets.token_urlsafe(50))"`. '
        "For development use DJANGO_SETTINGS_MODULE=config.settings.local (as `make run` does)."
    )

ALLOWED_HOSTS = [host for host in env.list("ALLOWED_HOSTS", default=[]) if host]
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS must name the host names this site answers to in production "
        "(comma-separated, e.g. ALLOWED_HOSTS=chat.example.com)."
    )

# HTTPS only: redirect plain HTTP, tell browsers to stay on HTTPS (HSTS), secure cookies.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# But not the operators' endpoints: load balancers and Prometheus probe a web process over
# plain HTTP on the private network (docs/deployment.md, "Health and readiness").
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# X-Forwarded-Proto decides whether a request came over HTTPS only when the operator says
# a proxy sets it (TRUST_X_FORWARDED_PROTO); the websocket's Origin check follows the same.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("TRUST_X_FORWARDED_PROTO", default=False) else None
)

# MIDDLEWARE holds subclasses of Django's security, CSRF and clickjacking middleware, which
# Django's deploy checks W001-W003 do not recognise (they look for the stock paths);
# sessions_app/web/security_checks.py checks for the classes or subclasses instead.
_STOCK = {
    "security.W001": "django.middleware.security.SecurityMiddleware",
    "security.W002": "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "security.W003": "django.middleware.csrf.CsrfViewMiddleware",
}
SILENCED_SYSTEM_CHECKS = [check for check, path in _STOCK.items() if path not in MIDDLEWARE]  # noqa: F405

# Credentials in websocket URLs end up in access logs: production takes the header or a
# ticket (docs/security.md) unless the operator turns `?token=` back on.
SESSIONS_APP = {**SESSIONS_APP, "ALLOW_QUERY_TOKEN": env.bool("CHAT_ALLOW_QUERY_TOKEN", default=False)}
