"""The API's URLs under `api/`: each endpoint also answers with a trailing slash."""

from django.urls import URLPattern, URLResolver, include, path

from sessions_app.ably import views as ably_views  # noqa: F401  registers the Ably endpoints
from sessions_app.web.api import agents, endpoints, tokens  # noqa: F401  register their endpoints on the API
from sessions_app.web.api.app import api

# Not `app_name`: Django would read a module-level app_name as this urlconf's namespace.
_patterns, _app, _namespace = api.urls


def _with_trailing_slashes(entries: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    extra: list[URLPattern | URLResolver] = []
    for entry in entries:
        route = str(entry.pattern)
        if isinstance(entry, URLPattern) and route and not route.endswith("/"):
            extra.append(path(f"{route}/", entry.callback))
    return [*entries, *extra]


urlpatterns = [path("api/", include((_with_trailing_slashes(list(_patterns)), _app), namespace=_namespace))]
