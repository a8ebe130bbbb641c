from django.apps import AppConfig


class SessionsAppConfig(AppConfig):
    name = "sessions_app"
    verbose_name = "Chat sessions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from sessions_app.infra.interpreter import tune_interpreter
        from sessions_app.web import request_signals

        request_signals.connect_request_finished()

        tune_interpreter()
        # Connects the receiver that hands ready turns to the Celery workers.
        import sessions_app.worker.tasks  # noqa: F401

        # Security hooks: an ended membership closes its websockets; logout and a password
        # change revoke the user's API tokens; every credential change makes the web processes
        # forget the tokens and browser sessions they checked (docs/security.md).
        from sessions_app.cancellation import services as cancellation
        from sessions_app.sessions import services
        from sessions_app.web import security_checks, session_cache, token_cache, tokens  # noqa: F401  (deploy checks)

        services.connect_signals()
        cancellation.connect_signals()  # a deleted session's turns stop
        tokens.connect_signals()
        token_cache.connect_signals()
        session_cache.connect_signals()
