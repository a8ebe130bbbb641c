"""ASGI entry point: HTTP through Django, websockets through Channels.

Django is set up before the consumers are imported, as Channels requires. Without
DJANGO_SETTINGS_MODULE it loads the production settings (safe by default: they refuse to
start without a real SECRET_KEY and ALLOWED_HOSTS); `make run` and the tests name theirs.
"""

import os

from sessions_app.web.http_entry import http_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django_asgi_app = http_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from sessions_app.routing import websocket_urlpatterns  # noqa: E402
from sessions_app.web.auth import AllowedHostsBrowserOriginValidator  # noqa: E402

# Authentication runs inside each route (sessions_app/routing.py): a path that nothing serves
# is refused without a credential being looked at.
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsBrowserOriginValidator(URLRouter(websocket_urlpatterns)),
    }
)

from sessions_app.infra.interpreter import freeze_start_up_objects  # noqa: E402
from sessions_app.worker.tasks import prepare_hand_over  # noqa: E402

prepare_hand_over()  # Celery's set-up, not the first send's that finds no worker waiting
freeze_start_up_objects()
