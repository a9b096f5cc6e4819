"""The dashboard's pages: each asks the API with the session's key (services/ingress/ui/api.py) and
renders what it answered. Forms post here, are checked (CSRF first), and become the API's requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
import markupsafe
from aiohttp import web

from mail.html import clean
from services.ingress.context import CONTEXT
from services.ingress.ui import forms, sessions
from services.ingress.ui.api import Api, ApiFailure
from services.ingress.ui.sessions import Session

HERE = Path(__file__).parent
routes = web.RouteTableDef()
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
TEMPLATES.filters["when"] = lambda iso: iso.replace("T", " ").split(".")[0].removesuffix("Z") + " UTC" if iso else ""
TEMPLATES.filters["q"] = lambda value: quote(str(value), safe="")
TEMPLATES.filters["pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True)


def frame_size(bodies: tuple[str | None, str | None]) -> str:
    """A frame's height class for a body (a sandboxed frame cannot size itself: it runs no script),
    guessed from its text, else its HTML's length."""
    text, html = bodies
    lines = (text or "").count("\n") + len(text or "") // 100 if text else len(html or "") // 400
    return "short" if lines < 8 else "tall" if lines > 30 else ""


TEMPLATES.filters["frame_size"] = frame_size
# A signed download link as this page's own path: the API makes it under SENDSTREAM_PUBLIC_BASE_URL, and
# the dashboard is served by that same ingress, however it was reached.
TEMPLATES.filters["here"] = lambda url: urlsplit(url)._replace(scheme="", netloc="").geturl() if url else url

# What a page says after a form did its work (a code in the redirect, never text from the request).
NOTICES = {
    "approved": "Draft approved: it is on its way.",
    "rejected": "Draft rejected: it will never be sent.",
    "edited": "Draft saved.",
    "cancelled": "Scheduled send cancelled.",
    "suppressed": "Address added to the suppression list.",
    "unsuppressed": "Address removed from the suppression list.",
    "retried": "Delivery queued again.",
    "refused": "Draft approved, but every recipient was refused (suppressed, or over a cap): see its conversation.",
    "out": "You are logged out.",
    "changed": "Not approved: the draft was edited after you opened it. Review it again.",
    "replied": "Reply sent.",
    "held": "Reply kept as a draft: it is sent once approved.",
}


class SignedOut(Exception):
    """The request has no live session: it goes to the login page."""


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session: Session | None = values.get("session")
    csrf = forms.bind(forms.Protected, request["ui_csrf_secret"], session.csrf).csrf_token.current_token if session else ""
    html = TEMPLATES.get_template(template).render(
        csrf=csrf, path=request.path, status=status, notice=NOTICES.get(request.query.get("notice", "")), **values
    )
    return web.Response(text=html, status=status, content_type="text/html")


async def signed_in(request: web.Request) -> tuple[Session, Api]:
    session = await sessions.current(request.config_dict[CONTEXT], request)
    if session is None:
        raise SignedOut
    request["ui_session"] = session
    return session, Api(request, session.key)


async def posted(request: web.Request, form: type[forms.Protected]) -> tuple[Session, Api, forms.Protected]:
    """The session, its API and the posted form, validated; a form without its CSRF token is refused (403)."""
    session, api = await signed_in(request)
    bound = forms.bind(form, request["ui_csrf_secret"], session.csrf, await request.post())
    if not valid(bound):
        raise ApiFailure(400, "invalid_request", "; ".join(e for errors in bound.errors.values() for e in errors))
    return session, api, bound


def valid(form: forms.Protected) -> bool:
    """Whether the posted form is valid; one without its CSRF token (or with another's) is refused (403)."""
    if form.validate():
        return True
    if forms.csrf_refused(form):
        raise web.HTTPForbidden(text="this form was not sent from this dashboard's page (CSRF token missing or wrong)")
    return False


def see_other(to: str) -> web.Response:
    return web.Response(status=303, headers={"Location": to})


def done(to: str, notice: str) -> web.Response:
    return see_other(f"{to}{'&' if '?' in to else '?'}notice={notice}")


def segment(request: web.Request, name: str) -> str:
    """A path parameter of this page, as a path segment of the API's URL (never `.` or `..`, which would
    name another of its routes)."""
    value = request.match_info[name]
    if value.strip(".") == "":
        raise web.HTTPNotFound
    return quote(value, safe="")


async def act(request: web.Request, method: str, api_path: str, to: str, notice: str) -> web.Response:
    """A button's form: checked, done by the API, then back to `to` saying `notice`."""
    _, api, _ = await posted(request, forms.Protected)
    await api.call(method, api_path)
    return done(to, notice)


def back(request: web.Request, default: str) -> str:
    """Where a form asked to go next: a dashboard path only (never another site)."""
    wanted = request.query.get("next", "")
    safe = wanted.startswith("/ui/") and "\\" not in wanted and wanted.isprintable()
    return wanted if safe else default


# --- login ------------------------------------------------------------------------------------------


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    new: dict[str, str] = {}
    form = forms.bind(forms.Login, request["ui_csrf_secret"], sessions.login_context(request, new))
    response = render(request, "login.html", form=form)
    for name, value in new.items():
        sessions.set_cookie(response, request, name, value, sessions.LOGIN_TTL)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    c, new = request.config_dict[CONTEXT], {}
    form = forms.bind(forms.Login, request["ui_csrf_secret"], sessions.login_context(request, new), await request.post())
    if not valid(form):
        return render(request, "login.html", 400, form=form, error="api_key: is required")
    if previous := await sessions.current(c, request):  # a new login ends the session this browser had
        await sessions.end(c.pool, previous)
    token = await sessions.start(c, form.api_key.data.strip())
    if token is None:
        return render(request, "login.html", 401, form=form, error="api_key: this is no valid API key (or it was revoked)")
    response = see_other("/ui/conversations")
    sessions.set_cookie(response, request, sessions.COOKIE, token, sessions.TTL)
    sessions.drop_cookie(response, request, sessions.LOGIN_COOKIE)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    session, _, _ = await posted(request, forms.Protected)
    await sessions.end(request.config_dict[CONTEXT].pool, session)
    response = done("/ui/login", "out")
    sessions.drop_cookie(response, request, sessions.COOKIE)
    return response


@routes.get("/")
async def home(request: web.Request) -> web.Response:
    await signed_in(request)
    return see_other("/ui/conversations")


# --- identities ---------------------------------------------------------------------------------------


@routes.get("/identities")
async def identities(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    found = (await api.get("/v1/identities"))["data"]
    pools = await asyncio.gather(*(api.get(f"/v1/identities/{quote(i['handle'], safe='')}/mailboxes") for i in found))
    return render(request, "identities.html", session=session, identities=list(zip(found, [p["data"] for p in pools], strict=True)))


# --- conversations and messages ---------------------------------------------------------------------------


@routes.get("/conversations")
async def conversations(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    q, identity, cursor = (request.query.get(k, "").strip() for k in ("q", "identity", "cursor"))
    handles = [i["handle"] for i in (await api.get("/v1/identities"))["data"]]
    if q:
        found, page = (await api.get("/v1/messages", q=q, identity=identity))["data"], None
    else:
        found, page = None, await api.get("/v1/conversations", identity=identity, cursor=cursor)
    return render(
        request, "conversations.html", session=session, q=q, identity=identity, handles=handles, found=found, page=page
    )


@routes.get("/conversations/{convId}")
async def conversation(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    conv = await api.get(f"/v1/conversations/{segment(request, 'convId')}")
    form = forms.bind(forms.Reply, request["ui_csrf_secret"], session.csrf, idempotency_key=str(uuid.uuid4()))
    return render(request, "conversation.html", session=session, conv=conv, form=form)


@routes.post("/conversations/{convId}/reply")
async def reply(request: web.Request) -> web.Response:
    """A person answers in the conversation, through the identity's send, as an agent would: from the
    mailbox the conversation uses, threaded; held as a draft if the identity needs approval."""
    _, api, form = await posted(request, forms.Reply)
    conv_id = segment(request, "convId")
    conv = await api.get(f"/v1/conversations/{conv_id}")
    answer = await api.call(
        "POST", f"/v1/identities/{quote(conv['identity'], safe='')}/send", body={"convId": conv["id"], "text": form.text.data},
        idempotency_key=form.idempotency_key.data,
    )  # fmt: skip
    held = answer.get("pendingApproval") if isinstance(answer, dict) else 0
    return done(f"/ui/conversations/{conv_id}", "held" if held else "replied")


@routes.get("/messages/{messageId}")
async def message(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    mid = segment(request, "messageId")
    msg, trail, hooks = await asyncio.gather(
        api.get(f"/v1/messages/{mid}"), timeline(api, mid), api.get("/v1/webhooks")
    )
    pages = await asyncio.gather(
        *(api.get(f"/v1/webhooks/{quote(h['id'], safe='')}/deliveries", messageId=msg["messageId"]) for h in hooks["data"])
    )
    deliveries = [(h, d) for h, p in zip(hooks["data"], pages, strict=True) for d in p["data"]]
    shown = await asyncio.to_thread(clean, msg["html"]) if msg["html"] else None
    return render(
        request, "message.html", session=session, msg=msg, trail=trail, deliveries=deliveries, shown=shown,
        images=request.query.get("images") == "1",
    )  # fmt: skip


async def timeline(api: Api, message_id: str) -> list[dict]:
    """The message's events; none yet for a message a draft still holds (its draft's events are the draft's)."""
    try:
        return (await api.get(f"/v1/messages/{message_id}/events"))["data"]
    except ApiFailure as exc:
        if exc.status == 404:
            return []
        raise


LIVE_CHECK_S = 2  # how soon a live stream ends after its session does (at its next event or keep-alive)
FRAME_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:{remote}; frame-ancestors 'self'; "
    "form-action 'none'; base-uri 'none'; sandbox allow-popups allow-popups-to-escape-sandbox"
)


FRAME_STYLE = "<style>body { font: 15px/1.45 system-ui, sans-serif; margin: .6rem; } pre { white-space: pre-wrap; }</style>"


@routes.get("/messages/{messageId}/body")
async def message_body(request: web.Request) -> web.Response:
    """The message's body as the frame of its page shows it."""
    _, api = await signed_in(request)
    msg = await api.get(f"/v1/messages/{segment(request, 'messageId')}")
    return await framed(msg["html"], msg["text"], images=request.query.get("images") == "1")


async def framed(html: str | None, text: str | None, *, images: bool) -> web.Response:
    """A body as a frame shows it: the HTML cleaned (mail/html.py, off the event loop), served under a
    policy that runs nothing and loads nothing (remote images only when asked); else the text."""
    shown = await asyncio.to_thread(clean, html, remote_images=images) if html else None
    if shown and not shown.too_complex:
        body = shown.html
    else:
        note = "<p><em>This HTML is too complex to show safely; its text follows.</em></p>" if shown else ""
        body = f"{note}<pre>{markupsafe.escape(text or '')}</pre>"
    document = f'<!doctype html><html><head><meta charset="utf-8">{FRAME_STYLE}</head><body>{body}</body></html>'
    return web.Response(
        text=document, content_type="text/html",
        headers={
            "Content-Security-Policy": FRAME_POLICY.format(remote=" https: http:" if images else ""),
            "X-Frame-Options": "SAMEORIGIN", "Referrer-Policy": "no-referrer",
        },
    )  # fmt: skip


# --- drafts -------------------------------------------------------------------------------------------------


@routes.get("/drafts")
async def drafts(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    status = request.query.get("status", "pending")
    found = (await api.get("/v1/drafts", status=status, cursor=request.query.get("cursor", ""), limit="100"))
    return render(request, "drafts.html", session=session, drafts=found, shown=status)


@routes.get("/drafts/{draftId}/body")
async def draft_body(request: web.Request) -> web.Response:
    """A draft's HTML as a person reviews it, cleaned and framed as received mail is."""
    _, api = await signed_in(request)
    found = await api.get(f"/v1/drafts/{segment(request, 'draftId')}")
    return await framed(found["html"], found["text"], images=request.query.get("images") == "1")


@routes.get("/drafts/{draftId}")
async def draft(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    found = await api.get(f"/v1/drafts/{segment(request, 'draftId')}")
    form = forms.bind(
        forms.EditDraft, request["ui_csrf_secret"], session.csrf, subject=found["subject"], text=found["text"],
        html=found["html"],
    )  # fmt: skip
    return render(request, "draft.html", session=session, draft=found, form=form)


@routes.post("/drafts/{draftId}")
async def edit_draft(request: web.Request) -> web.Response:
    _, api, form = await posted(request, forms.EditDraft)
    draft_id = segment(request, "draftId")
    await api.call("PATCH", f"/v1/drafts/{draft_id}", body={k: getattr(form, k).data for k in ("subject", "text", "html")})
    return done(f"/ui/drafts/{draft_id}", "edited")


@routes.post("/drafts/{draftId}/approve")
async def approve_draft(request: web.Request) -> web.Response:
    _, api, form = await posted(request, forms.Approve)
    try:  # only the version the person saw: an edit since (by the agent, say) is not approved unseen
        body = {"ifUpdatedAt": form.if_updated_at.data}
        await api.call("POST", f"/v1/drafts/{segment(request, 'draftId')}/approve", body=body)
    except ApiFailure as exc:
        if exc.status == 429 and isinstance(exc.data, dict) and "draft" in exc.data:
            return done("/ui/drafts", "refused")  # approved, answered as the send was: every recipient refused
        if exc.status == 409 and exc.message.startswith("draft_changed"):
            return done("/ui/drafts", "changed")
        raise
    return done("/ui/drafts", "approved")


@routes.post("/drafts/{draftId}/reject")
async def reject_draft(request: web.Request) -> web.Response:
    _, api, form = await posted(request, forms.Reject)
    await api.call("POST", f"/v1/drafts/{segment(request, 'draftId')}/reject", body={"reason": form.reason.data})
    return done("/ui/drafts", "rejected")


# --- scheduled sends ------------------------------------------------------------------------------------------


@routes.get("/scheduled")
async def scheduled(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    found = await api.get("/v1/scheduled", cursor=request.query.get("cursor", ""), limit="100")
    return render(request, "scheduled.html", session=session, scheduled=found)


@routes.post("/scheduled/{messageId}/cancel")
async def cancel_scheduled(request: web.Request) -> web.Response:
    return await act(
        request, "POST", f"/v1/messages/{segment(request, 'messageId')}/cancel", "/ui/scheduled", "cancelled"
    )


# --- suppressions ---------------------------------------------------------------------------------------------


@routes.get("/suppressions")
async def suppressions(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    found = await api.get("/v1/suppressions", cursor=request.query.get("cursor", ""), limit="100")
    form = forms.bind(forms.AddSuppression, request["ui_csrf_secret"], session.csrf)
    return render(request, "suppressions.html", session=session, suppressions=found, form=form)


@routes.post("/suppressions")
async def add_suppression(request: web.Request) -> web.Response:
    _, api, form = await posted(request, forms.AddSuppression)
    await api.call("POST", "/v1/suppressions", body={"address": form.address.data.strip()})
    return done("/ui/suppressions", "suppressed")


@routes.post("/suppressions/{address}/remove")
async def remove_suppression(request: web.Request) -> web.Response:
    return await act(
        request, "DELETE", f"/v1/suppressions/{segment(request, 'address')}", "/ui/suppressions", "unsuppressed"
    )


# --- webhooks ----------------------------------------------------------------------------------------------------


@routes.get("/webhooks")
async def webhooks(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    return render(request, "webhooks.html", session=session, webhooks=(await api.get("/v1/webhooks"))["data"])


@routes.get("/webhooks/{id}")
async def webhook(request: web.Request) -> web.Response:
    session, api = await signed_in(request)
    hook_id = segment(request, "id")
    hook, deliveries = await asyncio.gather(
        api.get(f"/v1/webhooks/{hook_id}"),
        api.get(f"/v1/webhooks/{hook_id}/deliveries", cursor=request.query.get("cursor", "")),
    )
    return render(request, "webhook.html", session=session, hook=hook, deliveries=deliveries)


@routes.post("/webhooks/{id}/deliveries/{deliveryId}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    hook_id, delivery_id = segment(request, "id"), segment(request, "deliveryId")
    api_path = f"/v1/webhooks/{hook_id}/deliveries/{delivery_id}/retry"
    return await act(request, "POST", api_path, back(request, f"/ui/webhooks/{hook_id}"), "retried")


# --- live ---------------------------------------------------------------------------------------------------------


@routes.get("/live")
async def live(request: web.Request) -> web.StreamResponse:
    """The organization's events as they happen, for the pages' script to refresh what they show
    (Server-Sent Events: each `data` is an event's type). It ends with the session (checked at each
    keep-alive) or when the browser leaves."""
    _, api = await signed_in(request)
    c = request.config_dict[CONTEXT]
    async with contextlib.aclosing(api.events()) as events:
        await anext(events)  # the API's stream is open (a refusal is raised here, before this answers)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        checked = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            await response.write(b"retry: 3000\n\n")
            async for kind in events:
                if time.monotonic() - checked > LIVE_CHECK_S:  # logged out, expired or revoked: over
                    if await sessions.current(c, request) is None:
                        break
                    checked = time.monotonic()
                await response.write(f"data: {kind}\n\n".encode() if kind else b": keep-alive\n\n")
    return response
