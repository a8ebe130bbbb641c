"""The API's URLs under `api/`: each endpoint also answers with a trailing slash."""

from django.urls import URLPattern, URLResolver, include, path

from sessions_app.ably import views as ably_views  # noqa: F401  registers the Ably endpoints
from sessions_app.web.api import agents, endpoints, tokens  # noqa: F401  register their endpoints on the API
from sessions_app.web.api.app import answering_unknown_methods_with_the_envelope, api

# Not `app_name`: Django would read a module-level app_name as this urlconf's namespace.
_patterns, _app, _namespace = api.urls


def _served(entries: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    """Each endpoint with a method it does not take answered with the envelope, and also
    with a trailing slash."""
    served: list[URLPattern | URLResolver] = []
    extra: list[URLPattern | URLResolver] = []
    for entry in entries:
        if not isinstance(entry, URLPattern):
            served.append(entry)
            continue
        view = answering_unknown_methods_with_the_envelope(entry.callback)
        route = str(entry.pattern)
        served.append(path(route, view, name=entry.name))
        if route and not route.endswith("/"):
            extra.append(path(f"{route}/", view))
    return [*served, *extra]


urlpatterns = [path("api/", include((_served(list(_patterns)), _app), namespace=_namespace))]
