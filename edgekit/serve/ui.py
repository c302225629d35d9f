"""The web page at / (`--ui`): pick a model, drop an image or paste a tensor, see the top-k labels,
the latency and the model's manifest. Three static files in static/, no build step and nothing
fetched from elsewhere, so it works on a board with no internet; the page calls the same /v2 API
as any client, with the API key the user types (kept in the tab's sessionStorage only).

The files themselves hold no secret, so they are served without the key (guard.OPEN_PATHS) and
the page can ask for it; every API call it makes is checked as usual.
"""
from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
         "/ui/style.css": ("style.css", "text/css; charset=utf-8")}
# The page runs only its own script and talks only to this server; a dropped image is shown from a blob: URL.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                      "base-uri 'none'; frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"}


def ui_routes() -> list[Route]:
    static = resources.files("edgekit.serve") / "static"
    routes = []
    for path, (name, media_type) in FILES.items():
        body = (static / name).read_bytes()  # read once at start-up: a missing file fails the start, not a request

        async def endpoint(request: Request, body=body, media_type=media_type) -> Response:
            return Response(body, media_type=media_type, headers=HEADERS)
        routes.append(Route(path, endpoint, methods=["GET"]))
    return routes
