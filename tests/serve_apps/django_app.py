"""A Django ASGI app for ``shutdown-scope serve django_app:application``.

One module: settings, views and URLs. ``/hello`` and ``/stream`` (see plain_app).
"""

from __future__ import annotations

from django.conf import settings  # type: ignore[import-untyped]

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests only",  # noqa: S106 -- not a secret: a test app
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
)

from django.core.asgi import get_asgi_application  # type: ignore[import-untyped]  # noqa: E402 -- after settings
from django.http import (  # type: ignore[import-untyped]  # noqa: E402
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.urls import path  # type: ignore[import-untyped]  # noqa: E402
from plain_app import ticks  # noqa: E402

from shutdown_scope.asgi import token_from_scope  # noqa: E402


async def hello(request: HttpRequest) -> HttpResponse:
    """A plain answer."""
    return HttpResponse("hello django\n", content_type="text/plain")


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    """Ticks until the drain begins, then ``bye``."""
    token = token_from_scope(request.scope)
    return StreamingHttpResponse(ticks(token), content_type="text/plain")


urlpatterns = [path("hello", hello), path("stream", stream)]
application = get_asgi_application()
