"""Deploy checks (`manage.py check --deploy`) for the middleware this project runs.

MIDDLEWARE lists subclasses of Django's security, CSRF and clickjacking middleware
(sessions_app/web/middleware.py: the same classes with hooks run on the event loop).
Django's own checks look for the stock dotted paths only (security.W001, W002, W003), so the
production settings silence those three and these checks take their place: each passes only
if MIDDLEWARE holds the stock class or a subclass of it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.module_loading import import_string

# Django's check id -> the class it looks for.
REPLACED = {
    "security.W001": SecurityMiddleware,
    "security.W002": XFrameOptionsMiddleware,
    "security.W003": CsrfViewMiddleware,
}


def _installed(base: type) -> bool:
    for path in settings.MIDDLEWARE:
        try:
            cls = import_string(path)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, base):
            return True
    return False


@register(Tags.security, deploy=True)
def middleware_installed(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    return [
        Warning(
            f"{base.__module__}.{base.__name__} (or a subclass) is not in MIDDLEWARE.",
            hint=f"Django's {check_id} is silenced in favour of this check; add the middleware.",
            id=f"sessions_app.{check_id}",
        )
        for check_id, base in REPLACED.items()
        if not _installed(base)
    ]
