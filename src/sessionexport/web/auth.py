"""Logging in with an API token, and out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessionexport import tokens
from sessionexport.clock import now_ms
from sessionexport.tokens import Scope
from sessionexport.web.app import PREFIX, Ui, Visit
from sessionexport.web.session import MAX_AGE_SECONDS

SETTINGS_READ, SESSIONS_READ = Scope.SETTINGS_READ.value, Scope.SESSIONS_READ.value


def routes(ui: Ui) -> list[Route]:
    return [
        Route("/login", ui.page(login_page, public=True), methods=["GET"]),
        Route("/login", ui.page(log_in, public=True), methods=["POST"]),
        Route("/logout", ui.page(log_out, public=True), methods=["POST"]),
    ]


async def login_page(ui: Ui, request: Request, visit: Visit) -> Response:
    return ui.render(request, visit, "login.html", next=_next(request.query_params.get("next")), error=None)


async def log_in(ui: Ui, request: Request, visit: Visit) -> Response:
    token = visit.field("token").strip()
    token_id = tokens.public_id(token)
    record = await ui.store.get_token(token_id) if token_id else None
    if record is None or not tokens.matches(record, token):
        error = "This API token is not valid (or it was revoked)." if token else "Enter an API token."
        return ui.render(
            request, visit, "login.html", status=401, next=_next(visit.field("next")), error=error
        )
    if tokens.expired(record, now_ms()):
        error = "This API token has expired."
        return ui.render(
            request, visit, "login.html", status=401, next=_next(visit.field("next")), error=error
        )
    logged_in = Visit(visit.session, record)
    if not logged_in.pages():
        error = f"This API token may see no page here: it needs {SETTINGS_READ} or {SESSIONS_READ}."
        return ui.render(
            request, visit, "login.html", status=403, next=_next(visit.field("next")), error=error
        )
    visit.session.log_in(record.id)
    visit.session.say(f"Logged in with the token “{record.name}”.")
    target = _next(visit.field("next")).removeprefix(PREFIX)
    return ui.redirect(target if logged_in.may_see(target) else "/")


async def log_out(ui: Ui, request: Request, visit: Visit) -> Response:
    if visit.session.id is not None:  # its cookie, wherever a copy of it is, is refused from now on
        now = now_ms()
        await ui.store.end_ui_session(visit.session.id, now + MAX_AGE_SECONDS * 1000, now)
    visit.session.log_out()
    visit.session.say("Logged out.")
    return ui.redirect("/login")


def _next(path: str | None) -> str:
    """Only a path inside the UI: a login link must not send anyone elsewhere."""
    if path and path.startswith(f"{PREFIX}/") and not path.startswith("//") and "\\" not in path:
        return path
    return f"{PREFIX}/"  # the first page the login may see
