"""The web UI at ``/ui``: a Starlette app mounted into the API's app, sharing its store, settings
service and exporters (so it runs the same domain code as the API, and no rule twice).

Every page goes through ``Ui.page``: it loads the login session, sends visitors without one to the
login page, checks the CSRF token of every POST and the API token's scope for the page, then saves
the session cookie. Views are plain functions of (ui, request, visit) in one module per page.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from sessionexport import __version__, tokens
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.export.supervisor import ExportSupervisor
from sessionexport.http_methods import allowed_methods
from sessionexport.settings.objects import ItemResult, NewObject, SettingsService
from sessionexport.settings.schemas import SCOPE
from sessionexport.store import Store, StoreError
from sessionexport.store.base import InvalidValue, StoreFull
from sessionexport.store.records import INT_MAX, SettingsRecord, TokenRecord
from sessionexport.throttle import Throttle, recurring
from sessionexport.tokens import Scope
from sessionexport.web import filters
from sessionexport.web.forms import NEW, REMOVE, value_from_form
from sessionexport.web.session import SessionCookies, UiSession

HERE = Path(__file__).parent
PREFIX = "/ui"
# Pages are never framed (another site on this host could make a logged-in visitor click a
# button) nor kept in a cache (Back after logging out would show sessions again).
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# The pages, in the order of the menu, and the scope each needs to be seen.
PAGES = (
    ("/exports", "Exports", Scope.SETTINGS_READ),
    ("/zones", "Management zones", Scope.SETTINGS_READ),
    ("/health", "Export health", Scope.SETTINGS_READ),
    ("/sessions", "Sessions", Scope.SESSIONS_READ),
)

log = logging.getLogger(__name__)


@dataclass
class Visit:
    """One request's view of the login: the session and the API token behind it."""

    session: UiSession
    token: TokenRecord | None
    form: FormData | None = None

    def can(self, scope: Scope) -> bool:
        return self.token is not None and scope.value in self.token.scopes

    def pages(self) -> list[tuple[str, str]]:
        """(path, title) of the pages this login may see, in menu order."""
        return [(path, title) for path, title, scope in PAGES if self.can(scope)]

    def may_see(self, path: str) -> bool:
        """Whether a UI path (``/sessions/61?x``) is on a page this login may see; paths of no
        page (the start) lead to one it may."""
        page = path.partition("?")[0]
        return all(
            self.can(scope) for prefix, _, scope in PAGES if page == prefix or page.startswith(f"{prefix}/")
        )

    @property
    def home(self) -> str:
        """Where this login starts: the first page it may see."""
        pages = self.pages()
        return pages[0][0] if pages else "/login"

    @property
    def author(self) -> str:
        """Who changed a settings object, as the API records it: the token's name."""
        return self.token.name if self.token is not None else "ui"

    def values(self) -> dict[str, str]:
        """The submitted form's text fields (a form of this UI has no file fields)."""
        items = self.form.multi_items() if self.form is not None else []
        return {name: value for name, value in items if isinstance(value, str)}

    def field(self, name: str) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""


View = Callable[["Ui", Request, Visit], Awaitable[Response]]


def stored_id(text: str) -> int | None:
    """A form's or query's id (a seq, a dead letter's id) as a number the store can hold, else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= INT_MAX else None


class Ui:
    def __init__(self, state: Any) -> None:
        self.store: Store = state.store
        self.settings: SettingsService = state.settings
        self.exports: ExportSupervisor = state.exports
        self.config: ServerConfig = state.config
        self.cookies = SessionCookies(state.settings.box.derive_key("sessionexport ui session"))
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters.update(filters.ALL)
        self.templates.env.globals.update(
            version=__version__, prefix=PREFIX, Scope=Scope, remove_field=REMOVE
        )

    def page(
        self, view: View, *, scopes: tuple[Scope, ...] = (), public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.cookies.load(request)
            visit = Visit(session, await self._token(session))
            response = await self._answer(request, visit, view, scopes, public)
            self.cookies.save(request, response, session)
            response.headers.update(PAGE_HEADERS)
            return response

        return endpoint

    async def _answer(
        self, request: Request, visit: Visit, view: View, scopes: tuple[Scope, ...], public: bool
    ) -> Response:
        if visit.token is None and not public:  # nothing is done, so no form needs checking
            return self._to_login(request, visit)
        if request.method == "POST":
            visit.form = await request.form()
            if not visit.session.csrf_ok(visit.field("csrf") or request.headers.get("x-csrf-token")):
                return self.render(
                    request,
                    visit,
                    "error.html",
                    status=403,
                    title="Form expired",
                    message="The form was not sent from this page, or it expired. Reload the page and try again.",
                )
        if missing := [s.value for s in scopes if not visit.can(s)]:
            return self.render(
                request,
                visit,
                "error.html",
                status=403,
                title="Not allowed",
                message=f"Your API token lacks the scope {', '.join(missing)} needed here.",
            )
        return await view(self, request, visit)

    def _to_login(self, request: Request, visit: Visit) -> Response:
        """The login page, which leads back to the page the visitor was on. A form sent once the
        login had ended (logged out elsewhere, token revoked, 8 hours passed) is not carried out,
        and says so; a request of a page's script makes the whole page go to the login."""
        reading = request.method in ("GET", "HEAD")
        if reading and not request.headers.get("hx-request"):
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        else:
            back = _page_path(request.headers.get("hx-current-url") or request.headers.get("referer"))
        login = f"{PREFIX}/login?next={quote(back)}"
        if not reading:
            visit.session.say("Your login had ended, so nothing was changed. Log in, then try again.")
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": login})
        return RedirectResponse(login, 303)

    async def _token(self, session: UiSession) -> TokenRecord | None:
        if session.token_id is None:
            return None
        ended = session.id is None or await self.store.ui_session_ended(session.id)
        record = None if ended else await self.store.get_token(session.token_id)
        if record is None or record.revoked_at is not None or tokens.expired(record, now_ms()):
            session.token_id, session.id, session.changed = None, None, True
            return None
        return record

    def render(
        self,
        request: Request,
        visit: Visit,
        template: str,
        *,
        status: int = 200,
        places: Collection[str] = (),
        **context: Any,
    ) -> Response:
        """A page; ``places``: the ids of its parts that show a message said about them in
        place (``UiSession.say(at=...)``); any other message is shown at the top."""
        fragment = bool(request.headers.get("hx-request"))  # a part of a page its script asked for
        if template == "error.html" and fragment:
            template = "_error.html"  # a page's script shows it in place, not a page in a page
        # A message waits for a page: a fragment (another tab's refresh, say) shows none.
        flash, at = (None, None) if fragment else visit.session.take_flash()
        context.update(
            visit=visit, csrf=visit.session.csrf, flash=flash, flash_at=at if at in places else None
        )
        return self.templates.TemplateResponse(request, template, context, status_code=status)

    async def save(
        self, visit: Visit, schema: dict[str, Any], object_id: str
    ) -> tuple[dict[str, Any], ItemResult]:
        """A settings object from its submitted form: created (``object_id`` NEW) or updated under
        the form's update token, as the Settings API would; (the value sent, the outcome)."""
        if object_id == NEW:
            value = value_from_form(schema, visit.values())
            new = NewObject(schema["schemaId"], SCOPE, value)
            return value, await self.settings.create(new, visit.author, now_ms())
        value = value_from_form(schema, visit.values(), keep_secrets=True)
        token = visit.field("updateToken") or None
        return value, await self.settings.update(object_id, value, token, visit.author, now_ms())

    def overtaken_save(self, visit: Visit, result: ItemResult, what: str, page: str) -> Response | None:
        """The answer to a save that found its object changed (409) or deleted (404) since the
        form was read: the page anew, saying so; None for any other outcome. (Showing the form
        as sent under the new update token would let a second Save overwrite the other change.)"""
        if result.code == 409:
            visit.session.say(
                f"Not saved: the {what} was changed meanwhile (in another tab, or by someone else)."
                " The form now shows what is saved: make your changes again."
            )
            return self.redirect(page)
        if result.code == 404:
            visit.session.say(f"Not saved: that {what} no longer exists.")
            return self.redirect(page.partition("#")[0])
        return None

    @staticmethod
    def overtaken_change(result: ItemResult, what: str, verb: str) -> str | None:
        """What a page says of a delete or a pause made from a page read before the object changed
        (409) or went (404); None for any other outcome."""
        if result.code == 409:
            return (
                f"Not {verb}: the {what} was changed meanwhile (in another tab, or by someone else)."
                f" The page now shows it as it is: try again if you still mean to."
            )
        if result.code == 404:
            return f"Not {verb}: that {what} no longer exists."
        return None

    def export_names(self, records: list[SettingsRecord]) -> dict[str, str]:
        """How the pages name each export (``filters.export_names``), by object id."""
        return filters.export_names([(r.object_id, self.settings.masked_value(r)) for r in records])

    @staticmethod
    def redirect(path: str) -> Response:
        return RedirectResponse(f"{PREFIX}{path}", 303)


def _page_path(url: str | None) -> str:
    """The UI page a URL (a Referer) names, with its query; the UI's start when it names none."""
    parts = urlsplit(url or "")
    if not parts.path.startswith(f"{PREFIX}/") or parts.path.startswith(f"{PREFIX}/login"):
        return f"{PREFIX}/"
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _form_page(path: str) -> str | None:
    """The page whose forms send to ``path``, where a visit to such an address goes: a refused form
    leaves its address in the address bar, and the browser visits it again on a reload."""
    section = path.removeprefix(f"{PREFIX}/").partition("/")[0]
    return f"{PREFIX}/{section}" if section in ("exports", "zones", "health") else None


def create_ui(state: Any) -> Starlette:
    from sessionexport.web import auth, exports, health, sessions, zones

    ui = Ui(state)
    routes: list[BaseRoute] = [
        Route("/", ui.page(_home)),
        *auth.routes(ui),
        *exports.routes(ui),
        *zones.routes(ui),
        *health.routes(ui),
        *sessions.routes(ui),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    pages = {
        404: _error_page(ui, 404, "Not found", "There is no such page here."),
        405: _error_page(ui, 405, "Not here", "This address takes a form, not a visit; go back and send it."),
    }

    async def error_page(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        if status == 405 and request.method == "GET" and (page := _form_page(request.url.path)):
            return RedirectResponse(page, 303)
        response = await pages[status](request)
        if response.status_code == 405:  # what the path takes: its GET and POST are routes of their own
            response.headers["Allow"] = allowed_methods(request)
        return response

    store_failures = Throttle()  # logged now and then, not once a page

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        """The database does not answer, or its disk is full: a 503 page (as the API answers),
        made without it."""
        if (quiet := store_failures.allows()) is not None:
            log.error("ui: the store failed: %s%s", exc, recurring(quiet))
        visit = Visit(ui.cookies.load(request), None)
        if isinstance(exc, StoreFull):  # it reads, so pages show; a change cannot be written
            title, retry = "Storage is full", "60"
            message = (
                "The disk of the store is full, so nothing was changed. Try again once space is freed"
                " (an operator can shorten the retention, or give the store more space)."
            )
        else:
            title, retry = "Storage is unavailable", "5"
            message = "The database does not answer, so nothing was shown or changed. Try again in a moment."
        response = ui.render(request, visit, "error.html", status=503, title=title, message=message)
        response.headers.update({**PAGE_HEADERS, "Retry-After": retry})
        return response

    async def value_refused(request: Request, exc: Exception) -> Response:
        """The database cannot hold a value typed in (PostgreSQL: NUL in text): the input's
        fault, said as such, not as a database that does not answer."""
        visit = Visit(ui.cookies.load(request), None)
        message = f"Nothing was changed: {exc}. Go back, correct the value and save again."
        response = ui.render(
            request, visit, "error.html", status=400, title="A value cannot be stored", message=message
        )
        response.headers.update(PAGE_HEADERS)
        return response

    # unknown paths (/ui/sessions/abc) and methods get the UI's page, with its menu, not plain text
    handlers: dict[Any, Any] = {
        404: error_page,
        405: error_page,
        StoreError: store_unavailable,
        InvalidValue: value_refused,
    }
    return Starlette(routes=routes, exception_handlers=handlers)


def _error_page(ui: Ui, status: int, title: str, message: str) -> Callable[[Request], Awaitable[Response]]:
    async def view(ui: Ui, request: Request, visit: Visit) -> Response:
        return ui.render(request, visit, "error.html", status=status, title=title, message=message)

    return ui.page(view, public=True)


async def _home(ui: Ui, request: Request, visit: Visit) -> Response:
    return ui.redirect(visit.home)
