"""The dashboard (SPEC 3.7), served by the ingress under `/ui/`: server-rendered pages (Jinja2), forms
with CSRF tokens (WTForms), one small script for live updates, no build step.

Every response carries a Content-Security-Policy that allows no inline script and nothing from
elsewhere; received mail is shown only inside a sandboxed frame of its own, stricter still
(pages.message_body).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiohttp import web

from services.ingress.context import CONTEXT
from services.ingress.core.errors import Unavailable
from services.ingress.ui import pages, sessions
from services.ingress.ui.api import ApiFailure, client_context

log = structlog.get_logger("sendstream.ui")

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@web.middleware
async def guard(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Sessions, errors as pages (never JSON, never a stack), and the security headers of every answer."""
    try:
        request["ui_csrf_secret"] = sessions.csrf_secret(request.config_dict[CONTEXT])
        if request.method == "POST" and not same_origin(request):
            raise web.HTTPForbidden(text="this form was sent from another site, or another port of this one")
        response = await handler(request)
    except pages.SignedOut:  # a page goes to the login form; a frame, a script's fetch or a stream is told 401
        if request.headers.get("Sec-Fetch-Dest", "document") == "document":
            response = pages.see_other("/ui/login")
        else:
            response = web.Response(status=401, text="not logged in", headers={"Cache-Control": "no-store"})
    except ApiFailure as exc:
        if exc.status == 401:  # the key was revoked meanwhile: the session is over
            if session := request.get("ui_session"):
                await sessions.end(request.config_dict[CONTEXT].pool, session)
            response = pages.see_other("/ui/login")
        else:
            response = pages.render(
                request, "error.html", exc.status, session=request.get("ui_session"), error=exc.message
            )
    except Unavailable as exc:
        response = pages.render(request, "error.html", 503, error=str(exc))
    except (TimeoutError, aiohttp.ClientError) as exc:  # the API did not answer
        log.warning("the API did not answer the dashboard", path=request.path, error=repr(exc))
        response = pages.render(
            request, "error.html", 502, session=request.get("ui_session"), error="the API did not answer; try again"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = pages.render(
            request, "error.html", exc.status, session=request.get("ui_session"),
            error=exc.text if exc.status == 403 else exc.reason,
        )  # fmt: skip
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def same_origin(request: web.Request) -> bool:
    """A post from this dashboard's own pages, as the browser says (Fetch Metadata, else Origin); the CSRF
    token is checked besides. This also refuses what SameSite lets through: another port of this host."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def app() -> web.Application:
    ui = web.Application(middlewares=[guard])
    ui.cleanup_ctx.append(client_context)
    ui.add_routes(pages.routes)
    ui.router.add_static("/static", pages.HERE / "static")
    return ui
