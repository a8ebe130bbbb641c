from typing import Any

from django.apps import AppConfig
from django.core.signals import request_finished


def close_request_connections(**_kwargs: Any) -> None:
    """Under ASGI each sync request runs in a thread of its own, which a persistent
    connection would outlive: a burst of requests would hold one database connection each
    (beyond PostgreSQL's 100 by default). Close the request thread's connections when its
    request is done; the fixed thread sets (websocket commands, the worker's engine) keep
    theirs."""
    from django.db import connections

    connections.close_all()


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        request_finished.connect(close_request_connections, dispatch_uid="sessions_app.close_request_connections")
        from sessions_app.infra.interpreter import tune_interpreter

        tune_interpreter()
        # Connects the receiver that hands ready turns to the Celery workers.
        import sessions_app.worker.tasks  # noqa: F401

        # Security hooks: an ended membership closes its websockets; logout and a password
        # change revoke the user's API tokens (docs/security.md).
        from sessions_app.sessions import services
        from sessions_app.web import security_checks, token_cache, tokens  # noqa: F401  (deploy checks)

        services.connect_signals()
        tokens.connect_signals()
        token_cache.connect_signals()
