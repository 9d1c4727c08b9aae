"""The web UI at ``/ui`` through the real app and a real SQLite store, over HTTP the way a browser
without JavaScript uses it: pages are parsed, and forms are sent with the fields they carry."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from starlette.routing import Mount, Route

from sessionexport import tokens
from sessionexport.api.app import create_app
from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.model.samples import WEB_SYNTHETIC, doc_sample
from sessionexport.request_bodies import SMALL_BODY_BYTES
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from sessionexport.settings.secrets import MASK, new_key
from sessionexport.store import StoreError
from sessionexport.store.base import InvalidValue, StoreFull
from sessionexport.store.records import NewSession
from sessionexport.web import sessions as web_sessions
from sessionexport.web.session import COOKIE
from tests.conftest import make_token
from tests.support.engine import export_value, sessions, until
from tests.support.receiver import Receiver, Tls

OBJECTS = "/api/v2/settings/objects"
SECRET = "client-secret-7Hq2vX"
PASSWORD = "basic-password-9Lm4zK"
TOKEN_URL = "https://auth.example/oauth/token"
ENDPOINT = "https://collector.example/sessions"

# What a user types into the empty "Add an export" form for a full OAuth 2.0 export.
OAUTH2_ENTRIES: dict[str, str | None] = {
    "endpointDefinition.endpointUrl": ENDPOINT,
    "endpointDefinition.contentType": "application/x-ndjson",
    "endpointDefinition.usePost": "true",
    "authentication.active": "true",
    "authentication.authType": "oauth2",
    "authentication.oAuth2.accessTokenUrl": TOKEN_URL,
    "authentication.oAuth2.clientId": "client-1",
    "authentication.oAuth2.clientSecret": SECRET,
    "authentication.oAuth2.scope": "sessions.write",
    "exportBehavior.disableNotification": "true",
    "exportBehavior.customConfiguration": '{"retries": 2}',
}
OAUTH2_VALUE: dict[str, Any] = {
    "endpointDefinition": {
        "endpointUrl": ENDPOINT,
        "enableUserSessionExport": True,
        "contentType": "application/x-ndjson",
        "usePost": True,
    },
    "authentication": {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "grantType": "clientCredentials",
            "accessTokenUrl": TOKEN_URL,
            "clientId": "client-1",
            "clientSecret": SECRET,
            "scope": "sessions.write",
            "sendCredentials": "header",
        },
    },
    "sendDirect": {"active": False},
    "exportBehavior": {
        "managementZone": None,
        "disableNotification": True,
        "customConfiguration": '{"retries": 2}',
    },
}
ELASTICSEARCH_ENTRIES: dict[str, str | None] = {
    "endpointDefinition.endpointUrl": "https://es.example.test:9200/_bulk",
    "endpointDefinition.contentType": "application/x-ndjson",
    "endpointDefinition.usePost": "true",
    "sendDirect.active": "true",
    "sendDirect.indexName": "rum",
    "sendDirect.docType": "_doc",
}


def masked(value: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = orjson.loads(orjson.dumps(value))
    copy["authentication"]["oAuth2"]["clientSecret"] = MASK
    return copy


# -- HTML, read as a browser reads it ------------------------------------------------------------------

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all(self, tag: str | None = None, **attrs: str | None) -> list[Node]:
        """Descendants with the tag and attributes (None: the attribute is present, any value)."""
        return [
            n
            for n in self.iter()
            if n is not self
            and (tag is None or n.tag == tag)
            and all(
                name.replace("_", "-") in n.attrs
                and (want is None or n.attrs[name.replace("_", "-")] == want)
                for name, want in attrs.items()
            )
        ]

    def one(self, tag: str | None = None, **attrs: str | None) -> Node:
        found = self.all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} <{tag or '*'} {attrs}> found"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(node)
        if tag not in VOID:
            self.open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open[-1].children.append(Node(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self.open[-1].children.append(data)


def parse(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


def form_data(form: Node) -> dict[str, str]:
    """What a browser submits for a form as it stands."""
    data: dict[str, str] = {}
    for element in form.iter():
        name = element.attrs.get("name")
        if not name or "disabled" in element.attrs:
            continue
        if element.tag == "input":
            kind = element.attrs.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in element.attrs:
                    data[name] = element.attrs.get("value", "on")
            elif kind not in ("submit", "button", "image", "reset", "file"):
                data[name] = element.attrs.get("value", "")
        elif element.tag == "select":
            options = element.all("option")
            chosen = [o for o in options if "selected" in o.attrs] or options[:1]
            data[name] = chosen[0].attrs.get("value", chosen[0].text) if chosen else ""
        elif element.tag == "textarea":
            data[name] = element.text
    return data


def dashed(path: str) -> str:
    """A field path as it appears in element ids: ``rules[1].value`` -> ``rules-1-value``."""
    return path.replace(".", "-").replace("[", "-").replace("]", "")


@dataclass
class Page:
    response: httpx.Response
    root: Node

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def html(self) -> str:
        return self.response.text

    def form(self, action: str) -> Node:
        return self.root.one("form", action=action)

    def has_form(self, action: str) -> bool:
        return bool(self.root.all("form", action=action))

    def buttons(self, within: Node | None = None) -> list[str]:
        return [" ".join(b.text.split()) for b in (within or self.root).all("button")]

    def error_at(self, container: str, path: str) -> str:
        """The message shown next to a field: the element with class "error" whose id ends in the
        field path's id, inside the element ``container`` (a form's card)."""
        card = self.root.one(id=container)
        found = [
            n
            for n in card.all(id=None)
            if "error" in n.classes and n.attrs["id"].endswith(f"-{dashed(path)}-error")
        ]
        assert len(found) == 1, f"no error shown at {path} in #{container}"
        return " ".join(found[0].text.split())

    def field_value(self, container: str, path: str) -> str:
        return form_data(self.root.one(id=container))[path]

    def described(self, container: str, name: str) -> list[str]:
        """The texts a control names in its aria-describedby, in order."""
        card = self.root.one(id=container)
        ids = card.one(name=name).attrs.get("aria-describedby", "").split()
        return [" ".join(card.one(id=i).text.split()) for i in ids]

    @property
    def flash(self) -> str | None:
        found = self.root.all("p", **{"class": "flash"})
        return " ".join(found[0].text.split()) if found else None


# -- a browser and the API, on the real app ------------------------------------------------------------


@dataclass
class Browser:
    client: httpx.AsyncClient
    transport: httpx.ASGITransport
    app: Any
    admin: str  # an API token with every scope

    @property
    def store(self) -> Any:
        return self.app.state.store

    async def token(self, *scopes: str, name: str = "ui-user") -> str:
        return await make_token(self.store, frozenset(scopes), name=name)

    @asynccontextmanager
    async def other(self) -> AsyncIterator[Browser]:
        """A second browser (its own cookies) on the same server."""
        async with httpx.AsyncClient(transport=self.transport, base_url=self.client.base_url) as client:
            yield Browser(client, self.transport, self.app, self.admin)

    async def get(self, path: str, **params: str) -> Page:
        response = await self.client.get(path, params=params or None)
        return Page(response, parse(response.text))

    async def page(self, path: str, **params: str) -> Page:
        page = await self.get(path, **params)
        assert page.status == 200, (path, page.status, page.html[:500])
        return page

    async def follow(self, response: httpx.Response) -> Page:
        assert response.status_code == 303, (response.status_code, response.text[:1000])
        return await self.page(response.headers["location"].split("#")[0])

    async def login(self, token: str | None = None, next_path: str | None = None) -> httpx.Response:
        page = await self.page("/ui/login", **({"next": next_path} if next_path is not None else {}))
        return await self.submit(page, "/ui/login", {"token": token or self.admin})

    async def logged_in(self, token: str | None = None) -> Browser:
        response = await self.login(token)
        assert response.status_code == 303, response.text
        return self

    async def submit(
        self,
        page: Page,
        action: str,
        entries: Mapping[str, str | None] | None = None,
        *,
        to: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Fill in a form of the page (None unchecks or removes a field) and send it, to its action
        or to another URL (a button's formaction)."""
        return await self.send(page.form(action), entries, to=to, headers=headers)

    async def send(
        self,
        form: Node,
        entries: Mapping[str, str | None] | None = None,
        *,
        to: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        data = form_data(form)
        for name, value in (entries or {}).items():
            if value is None:
                data.pop(name, None)
            else:
                data[name] = value
        return await self.client.post(to or form.attrs["action"], data=data, headers=headers)

    async def post(
        self, path: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.client.post(path, data=data or {}, headers=headers)

    async def csrf(self) -> str:
        """The CSRF token of this browser's session, from a page's form."""
        return (await self.page("/ui/login")).form("/ui/login").one(name="csrf").attrs["value"]

    # the API, with the all-scopes token
    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Api-Token {self.admin}"}

    async def api(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return await self.client.request(method, path, headers={**self.headers, **(headers or {})}, **kwargs)

    async def objects(self, schema: str = EXPORT_SCHEMA) -> list[dict[str, Any]]:
        response = await self.api(
            "GET", OBJECTS, params={"schemaIds": schema, "fields": "objectId,value,createdBy,updateToken"}
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def create(self, value: dict[str, Any], schema: str = EXPORT_SCHEMA) -> str:
        body = [{"schemaId": schema, "scope": "environment", "value": value}]
        response = await self.api("POST", OBJECTS, json=body)
        assert response.status_code == 200, response.text
        object_id: str = response.json()[0]["objectId"]
        return object_id

    async def ingest(self, lines: list[bytes]) -> None:
        response = await self.api(
            "POST",
            "/api/v2/usersessions",
            content=b"\n".join(lines),
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 200, response.text

    async def status(self, object_id: str) -> dict[str, Any]:
        response = await self.api("GET", f"/api/v2/exports/{object_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def plain_secret(self, object_id: str) -> Any:
        record = await self.app.state.settings.get(object_id)
        return self.app.state.settings.plain_value(record)["authentication"]["oAuth2"]["clientSecret"]

    async def snapshot(self) -> list[tuple[str, int, str]]:
        """Every settings object as stored (value and version): what a refused request must not touch."""
        return sorted((r.object_id, r.version, r.value) for r in await self.store.list_settings())


@asynccontextmanager
async def open_ui(config: ServerConfig) -> AsyncIterator[Browser]:
    app = create_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://sessionexport.test", timeout=30) as client,
    ):
        yield Browser(client, transport, app, await make_token(app.state.store, name="admin"))


@pytest.fixture
async def ui(tmp_path: Path) -> AsyncIterator[Browser]:
    # No exporters: the exports configured here point at hosts that do not exist.
    async with open_ui(ServerConfig(data_dir=tmp_path / "data", run_exporters=False)) as browser:
        yield browser


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return Tls.create(tmp_path)


@pytest.fixture
def receiver(tls: Tls) -> Iterator[Receiver]:
    r = Receiver(tls).start()
    yield r
    r.stop()


@pytest.fixture
async def ui_tls(tmp_path: Path, tls: Tls) -> AsyncIterator[Browser]:
    """The UI of a server that trusts the test receiver's CA (no exporters running)."""
    config = ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file, run_exporters=False)
    async with open_ui(config) as browser:
        yield browser


@pytest.fixture
async def live(tmp_path: Path, tls: Tls) -> AsyncIterator[Browser]:
    """The UI of a server whose exporters run, trusting the test receiver's CA."""
    async with open_ui(ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file)) as browser:
        yield browser


def ui_routes(app: Any) -> list[Route]:
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/ui")
    return [r for r in mount.routes if isinstance(r, Route)]


def concrete(path: str, object_id: str = "x", seq: int = 1) -> str:
    return "/ui" + re.sub(r"\{[^}]+\}", lambda m: str(seq) if ":int" in m.group() else object_id, path)


def session_line(user_session_id: str, **fields: Any) -> bytes:
    """The documentation's web session with another identity and the given fields."""
    document = orjson.loads(doc_sample(WEB_SYNTHETIC))
    document.update(userSessionId=user_session_id, **fields)
    return orjson.dumps(document)


# -- logging in ------------------------------------------------------------------------------------------


async def test_every_page_sends_a_visitor_without_login_to_the_login_page(ui: Browser) -> None:
    gets = [r for r in ui_routes(ui.app) if "GET" in (r.methods or ()) and r.path not in ("/", "/login")]
    assert {r.path for r in gets} >= {"/exports", "/zones", "/health", "/sessions", "/sessions/{seq:int}"}
    for route in gets:
        path = concrete(route.path)
        response = await ui.client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/ui/login?next={quote(path)}", path
    root = await ui.client.get("/ui/")
    assert root.status_code == 303 and root.headers["location"] == "/ui/login?next=/ui/"

    # a form sent without a login (with the CSRF token of the login page) changes nothing either
    csrf = await ui.csrf()
    for route in ui_routes(ui.app):
        if "POST" in (route.methods or ()) and route.path not in ("/login", "/logout"):
            path = concrete(route.path)
            response = await ui.post(path, {"csrf": csrf, "endpointDefinition.endpointUrl": ENDPOINT})
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/ui/login?next="), path
    assert await ui.snapshot() == []


async def test_pages_are_never_framed_nor_kept_in_a_cache(ui: Browser) -> None:
    await ui.logged_in()
    for path in ("/ui/login", "/ui/exports", "/ui/sessions", "/ui/health"):
        response = await ui.client.get(path)
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["Content-Security-Policy"] == "frame-ancestors 'none'", path
        assert response.headers["Cache-Control"] == "no-store", path


async def test_unknown_pages_and_methods_get_the_uis_own_page(ui: Browser) -> None:
    await ui.logged_in()
    for method, path, status, title, said in [
        ("GET", "/ui/sessions/abc", 404, "Not found", "There is no such page here."),
        ("GET", "/ui/nothing", 404, "Not found", "There is no such page here."),
        ("GET", "/ui/logout", 405, "Not here", "This address takes a form, not a visit"),
    ]:
        response = await ui.client.request(method, path)
        assert response.status_code == status, path
        page = parse(response.text)
        assert page.one("h1").text == title, path
        assert said in response.text, path
        assert next(a.text for a in page.one("nav").all("a")) == "Exports"  # the menu is there
        assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize(
    ("address", "page"),
    [
        ("/ui/exports/0123456789abcdef", "/ui/exports"),
        ("/ui/exports/mapping", "/ui/exports"),
        ("/ui/zones/0123456789abcdef", "/ui/zones"),
        ("/ui/health/0123456789abcdef/replay", "/ui/health"),
    ],
)
async def test_a_visit_to_the_address_of_a_form_goes_to_its_page(
    ui: Browser, address: str, page: str
) -> None:
    """A refused form leaves its address in the address bar; a reload visits it."""
    await ui.logged_in()
    response = await ui.client.get(address)
    assert response.status_code == 303 and response.headers["location"] == page


async def test_while_the_store_fails_pages_are_a_503_saying_so(
    ui: Browser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """As the API answers, and without a traceback per page (it was a 500 after the pool's wait):
    the failure is logged once, without one."""
    await ui.logged_in()
    store = ui.app.state.store

    async def down(*args: object, **kwargs: object) -> object:
        raise StoreError("the database does not answer")

    for name in ("ui_session_ended", "get_token", "list_settings"):
        monkeypatch.setattr(store, name, down)
    for path in ("/ui/exports", "/ui/health", "/ui/sessions"):
        response = await ui.client.get(path)
        assert response.status_code == 503, (path, response.text[:300])
        assert "Storage is unavailable" in response.text and response.headers["Retry-After"] == "5"
        assert response.headers["X-Frame-Options"] == "DENY"
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failures] == ["ui: the store failed: the database does not answer"]
    assert failures[0].exc_info is None


async def test_a_change_on_a_full_disk_is_a_503_page_saying_the_disk_is_full(
    ui: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages still show (reads work); a change cannot be written, and the page says why, as the
    API does, rather than that the database does not answer."""
    await ui.logged_in()
    page = await ui.page("/ui/zones")

    async def full(*args: object, **kwargs: object) -> None:
        raise StoreFull("sqlite: database or disk is full")

    monkeypatch.setattr(ui.app.state.store, "insert_setting", full)
    fields = {"name": "EMEA", "rules[0].attribute": "COUNTRY", "rules[0].value": "Poland"}
    response = await ui.submit(page, "/ui/zones", fields)
    assert response.status_code == 503, response.text[:300]
    assert parse(response.text).one("h1").text == "Storage is full"
    assert "The disk of the store is full, so nothing was changed" in response.text
    assert "does not answer" not in response.text and response.headers["Retry-After"] == "60"


async def test_a_value_the_database_cannot_hold_is_a_400_page_not_a_storage_failure(
    ui: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL refuses NUL in text (SQLite takes it): the value typed in is at fault."""
    await ui.logged_in()
    store = ui.app.state.store

    async def refuses(*args: object, **kwargs: object) -> None:
        raise InvalidValue("PostgreSQL cannot hold a value: NUL in text")

    monkeypatch.setattr(store, "insert_setting", refuses)
    page = await ui.page("/ui/zones")
    fields = {"name": "a\x00b", "rules[0].attribute": "COUNTRY", "rules[0].value": "Poland"}
    response = await ui.submit(page, "/ui/zones", fields)
    assert response.status_code == 400, response.text[:300]
    assert "A value cannot be stored" in response.text and "NUL in text" in response.text
    assert "does not answer" not in response.text


async def test_a_token_that_may_see_no_page_is_not_logged_in(ui: Browser) -> None:
    response = await ui.login(await ui.token("sessions.ingest", name="ingest only"))
    assert response.status_code == 403
    assert "needs settings.read or sessions.read" in response.text
    assert (await ui.client.get("/ui/")).headers["location"] == "/ui/login?next=/ui/"


async def test_a_login_starts_on_the_first_page_it_may_see(ui: Browser) -> None:
    response = await ui.login(await ui.token("sessions.read", name="reader"))
    start = await ui.client.get(response.headers["location"])
    assert start.headers["location"] == "/ui/sessions"
    page = await ui.page("/ui/sessions")
    assert [a.text for a in page.root.one("nav").all("a")] == ["Sessions"]


async def test_logging_in_leads_where_the_visitor_wanted_to_go(ui: Browser) -> None:
    redirect = await ui.client.get("/ui/sessions")
    login = await ui.page(redirect.headers["location"])
    assert login.form("/ui/login").one(name="next").attrs["value"] == "/ui/sessions"
    response = await ui.submit(login, "/ui/login", {"token": ui.admin})
    assert response.status_code == 303 and response.headers["location"] == "/ui/sessions"
    sessions_page = await ui.follow(response)
    assert sessions_page.flash == "Logged in with the token “admin”."
    assert " ".join(sessions_page.root.one(**{"class": "who"}).text.split()) == "admin"


NOT_VALID = "This API token is not valid (or it was revoked)."


@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        ("se0c01.AAAAAAAAAAAAAAAAAAAAAAAA." + "B" * 64, NOT_VALID),  # well formed, unknown
        ("not-a-token", NOT_VALID),
        ("", "Enter an API token."),
    ],
    ids=["unknown", "malformed", "empty"],
)
async def test_a_wrong_token_is_refused(ui: Browser, wrong: str, said: str) -> None:
    page = await ui.page("/ui/login")
    response = await ui.submit(page, "/ui/login", {"token": wrong})
    assert response.status_code == 401
    refused = Page(response, parse(response.text))
    message = " ".join(refused.root.one(id="token-error").text.split())
    assert "error" in refused.root.one(id="token-error").classes
    assert message == said
    assert (await ui.client.get("/ui/exports")).status_code == 303  # still not logged in


async def test_a_token_with_a_wrong_secret_part_is_refused(ui: Browser) -> None:
    public = tokens.public_id(ui.admin)
    assert public is not None
    forged = f"{tokens.PREFIX}.{public}.{'Z' * 64}"
    response = await ui.login(forged)
    assert response.status_code == 401
    assert (await ui.client.get("/ui/exports")).status_code == 303


async def test_a_revoked_token_cannot_log_in(ui: Browser) -> None:
    token = await ui.token("settings.read", name="gone")
    public = tokens.public_id(token)
    assert public is not None and await ui.store.revoke_token(public, now_ms())
    response = await ui.login(token)
    assert response.status_code == 401
    assert "revoked" in response.text
    assert (await ui.client.get("/ui/exports")).status_code == 303


async def test_an_expired_token_cannot_log_in_and_expiry_logs_the_browser_out(ui: Browser) -> None:
    now = now_ms()
    old = tokens.new_token("old", frozenset({"settings.read"}), now - 60_000, expires_at=now - 1)
    await ui.store.add_token(old.record)
    response = await ui.login(old.token)
    assert response.status_code == 401 and "has expired" in response.text
    expires = now_ms() + 5_000  # time to log in and load a page on a loaded machine
    soon = tokens.new_token("soon", frozenset({"settings.read"}), now_ms(), expires_at=expires)
    await ui.store.add_token(soon.record)
    await ui.logged_in(soon.token)
    assert (await ui.client.get("/ui/exports")).status_code == 200
    await asyncio.sleep((expires - now_ms()) / 1000 + 0.1)
    response = await ui.client.get("/ui/exports")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")


async def test_revoking_the_token_logs_the_browser_out(ui: Browser) -> None:
    token = await ui.token("settings.read", "settings.write", name="soon revoked")
    await ui.logged_in(token)
    page = await ui.page("/ui/zones")
    public = tokens.public_id(token)
    assert public is not None and await ui.store.revoke_token(public, now_ms())
    response = await ui.client.get("/ui/exports")
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    # a form of the page loaded before the revocation does nothing either, and says so; the
    # login leads back to the page the form was on (a form's action may be POST only)
    sent = await ui.submit(
        page,
        "/ui/zones",
        {"name": "Z", "rules[0].attribute": "COUNTRY", "rules[0].value": "X"},
        headers={"Referer": "http://testserver/ui/zones?edit=1"},
    )
    assert sent.status_code == 303 and sent.headers["location"] == "/ui/login?next=/ui/zones%3Fedit%3D1"
    assert await ui.snapshot() == []
    login = await ui.follow(sent)
    assert login.flash is not None and "nothing was changed" in login.flash
    # a script's request (htmx) sends the whole page to the login instead of filling a part of it
    stats = await ui.client.get(
        "/ui/health/x/stats", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/ui/health"}
    )
    assert stats.status_code == 401 and stats.headers["HX-Redirect"] == "/ui/login?next=/ui/health"


async def test_logging_out_ends_the_session_and_its_csrf_token(ui: Browser) -> None:
    await ui.logged_in()
    page = await ui.page("/ui/exports")
    old_csrf = page.form("/ui/logout").one(name="csrf").attrs["value"]
    response = await ui.submit(page, "/ui/logout")
    assert response.status_code == 303 and response.headers["location"] == "/ui/login"
    assert (await ui.client.get("/ui/exports")).status_code == 303
    # the form token known before logging out is worth nothing after it
    stale = await ui.post("/ui/login", {"csrf": old_csrf, "token": ui.admin})
    assert stale.status_code == 403
    assert (await ui.client.get("/ui/exports")).status_code == 303


async def test_a_copy_of_the_cookie_taken_before_logging_out_is_refused_after(ui: Browser) -> None:
    await ui.logged_in()
    copied = ui.client.cookies.get(COOKIE)
    assert copied is not None and (await ui.client.get("/ui/exports")).status_code == 200
    await ui.submit(await ui.page("/ui/exports"), "/ui/logout")
    async with ui.other() as thief:
        thief.client.cookies.set(COOKIE, copied, domain=ui.client.base_url.host, path="/ui")
        response = await thief.client.get("/ui/exports")
        assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    # logging in again makes a new session, which works
    await ui.logged_in()
    assert (await ui.client.get("/ui/exports")).status_code == 200


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/ui/exports",
        "//evil.example",
        "//evil.example/ui/",
        "/\\evil.example",
        "/ui\\..\\evil",
        "javascript:alert(1)",
        "/docs",
        "/ui",
        "",
    ],
)
async def test_login_only_returns_to_pages_of_the_ui(ui: Browser, target: str) -> None:
    page = await ui.page("/ui/login", next=target)
    assert page.form("/ui/login").one(name="next").attrs["value"] == "/ui/"  # the start
    # even when the form is changed to carry it
    response = await ui.submit(page, "/ui/login", {"token": ui.admin, "next": target})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/"
    start = await ui.client.get("/ui/")
    assert start.status_code == 303 and start.headers["location"] == "/ui/exports"


async def test_a_login_target_cannot_add_headers(ui: Browser) -> None:
    response = await ui.login(next_path="/ui/exports\r\nSet-Cookie: planted=1")
    assert response.status_code == 303
    assert "\r" not in response.headers["location"] and "\n" not in response.headers["location"]
    assert "planted" not in response.headers.get("set-cookie", "")
    assert "planted" not in ui.client.cookies


@pytest.mark.parametrize("target", ["/ui/zones", "/ui/sessions/3", "/ui/health"])
async def test_login_returns_to_the_page_asked_for(ui: Browser, target: str) -> None:
    response = await ui.login(next_path=target)
    assert response.status_code == 303 and response.headers["location"] == target


async def test_login_to_a_page_the_token_may_not_see_starts_on_one_it_may(ui: Browser) -> None:
    settings_only = await ui.token("settings.read", "exports.manage")
    response = await ui.login(settings_only, next_path="/ui/sessions/61")
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    start = await ui.client.get("/ui/")
    assert start.status_code == 303 and start.headers["location"] == "/ui/exports"


@pytest.mark.parametrize("hx", [False, True])
async def test_what_the_door_refuses_is_a_page_for_the_browser(ui: Browser, hx: bool) -> None:
    """A form too large for any route, or a URL holding NUL, is refused before the UI runs:
    answered as a page (or, for htmx, a fragment), not the API's JSON envelope."""
    await ui.logged_in()
    headers = {"HX-Request": "true"} if hx else {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    large = await ui.client.post("/ui/exports", content=b"x" * (SMALL_BODY_BYTES + 1), headers=headers)
    nul = await ui.client.get("/ui/sessions", params={"q": "\x00"}, headers=headers)
    for answer, status, reason in ((large, 413, "exceeds the limit"), (nul, 400, "NUL (%00) is not allowed")):
        assert answer.status_code == status
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert reason in answer.text and "Nothing was changed" in answer.text
        assert ("<title>" in answer.text) is not hx  # a fragment for htmx: a title would rename the tab
    api = await ui.client.get("/api/v2/usersessions", params={"userSessionId": "\x00"})
    assert api.json()["error"]["code"] == 400  # the API keeps its envelope


# -- CSRF ------------------------------------------------------------------------------------------------


async def test_every_form_needs_the_csrf_token_and_nothing_changes_without_it(ui: Browser) -> None:
    zone_id = await ui.create(
        {"name": "Z", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    export_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in()
    exports_page = await ui.page("/ui/exports")
    zones_page = await ui.page("/ui/zones")
    good = {
        **form_data(exports_page.form("/ui/exports")),
        "endpointDefinition.endpointUrl": "https://other.example/x",
        **{k: v for k, v in form_data(zones_page.form(f"/ui/zones/{zone_id}")).items() if k != "csrf"},
        "enabled": "false",
        "letter": "1",
        "token": ui.admin,
    }
    csrf = good.pop("csrf")
    before = await ui.snapshot()
    posts = [r for r in ui_routes(ui.app) if "POST" in (r.methods or ())]
    assert {r.path for r in posts} >= {
        "/login",
        "/logout",
        "/exports",
        "/exports/test",
        "/exports/sample",
        "/exports/mapping",
        "/exports/{object_id}",
        "/exports/{object_id}/enabled",
        "/exports/{object_id}/delete",
        "/zones",
        "/zones/{object_id}",
        "/zones/{object_id}/delete",
        "/health/{object_id}/replay",
    }
    for route in posts:
        path = concrete(route.path, zone_id if route.path.startswith("/zones") else export_id)
        for sent, header in (
            ({}, None),
            ({"csrf": "wrong" + csrf}, None),
            ({"csrf": ""}, None),
            ({}, "wrong" + csrf),
        ):
            response = await ui.post(
                path, {**good, **sent}, headers={"X-CSRF-Token": header} if header else None
            )
            assert response.status_code == 403, (path, sent, header, response.status_code)
            assert "Form expired" in response.text
            assert "attachment" not in response.headers.get("content-disposition", "")
    assert await ui.snapshot() == before
    assert (await ui.client.get("/ui/exports")).status_code == 200  # the logout was refused too


async def test_the_csrf_token_is_accepted_in_the_x_csrf_token_header(ui: Browser) -> None:
    zone_id = await ui.create(
        {"name": "Z", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    await ui.logged_in()
    page = await ui.page("/ui/exports")
    body_token = page.root.one("body").attrs["hx-headers"]
    csrf = orjson.loads(body_token)["X-CSRF-Token"]
    assert csrf == page.form("/ui/exports").one(name="csrf").attrs["value"]
    data = {**form_data(page.form("/ui/exports")), "endpointDefinition.endpointUrl": ENDPOINT}
    del data["csrf"]
    created = await ui.post("/ui/exports", data, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 303
    [stored] = await ui.objects()
    assert stored["value"]["endpointDefinition"]["endpointUrl"] == ENDPOINT
    deleted = await ui.post(f"/ui/zones/{zone_id}/delete", headers={"X-CSRF-Token": csrf})
    assert deleted.status_code == 303
    assert await ui.objects(ZONE_SCHEMA) == []


async def test_a_form_of_another_session_is_refused(ui: Browser) -> None:
    await ui.logged_in()
    async with ui.other() as attacker:
        await attacker.logged_in(await attacker.token("settings.read", name="attacker"))
        foreign_csrf = await attacker.csrf()
    page = await ui.page("/ui/exports")
    response = await ui.submit(
        page, "/ui/exports", {"csrf": foreign_csrf, "endpointDefinition.endpointUrl": ENDPOINT}
    )
    assert response.status_code == 403
    assert await ui.objects() == []


# -- scopes ----------------------------------------------------------------------------------------------


async def test_a_read_only_token_sees_the_exports_but_cannot_change_them(ui: Browser) -> None:
    export_id = await ui.create(export_value(ENDPOINT))
    zone_id = await ui.create(
        {"name": "Z", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    await ui.logged_in(await ui.token("settings.read", name="reader"))
    page = await ui.page("/ui/exports")
    assert ENDPOINT in page.html
    buttons = page.buttons(page.root.one("main"))
    assert "Save" not in buttons and "Add export" not in buttons
    assert "Pause" not in buttons and "Delete" not in buttons
    assert "Test export" not in buttons  # needs exports.manage and sessions.read
    assert "Download sample export data" not in buttons  # needs sessions.read
    assert "Download mapping" in buttons
    before = await ui.snapshot()
    forbidden = {
        "/ui/exports": form_data(page.form("/ui/exports")) | {"endpointDefinition.endpointUrl": ENDPOINT},
        f"/ui/exports/{export_id}": form_data(page.form(f"/ui/exports/{export_id}")),
        f"/ui/exports/{export_id}/enabled": {"enabled": "false"},
        f"/ui/exports/{export_id}/delete": {},
        f"/ui/zones/{zone_id}/delete": {},
        f"/ui/zones/{zone_id}": {"name": "Renamed", "rules[0].attribute": "COUNTRY", "rules[0].value": "X"},
        "/ui/zones": {"name": "New", "rules[0].attribute": "COUNTRY", "rules[0].value": "X"},
        "/ui/exports/test": form_data(page.form(f"/ui/exports/{export_id}")),
    }
    csrf = await ui.csrf()
    for path, data in forbidden.items():
        response = await ui.post(path, {**data, "csrf": csrf})
        assert response.status_code == 403, path
        assert "lacks the scope" in response.text
    assert await ui.snapshot() == before
    zones = await ui.page("/ui/zones")
    zone_buttons = zones.buttons(zones.root.one("main"))
    assert "Save" not in zone_buttons and "Add zone" not in zone_buttons and "Delete" not in zone_buttons
    # the mapping needs only settings.read
    mapping = await ui.post(
        "/ui/exports/mapping", {**form_data(page.form(f"/ui/exports/{export_id}")), "csrf": csrf}
    )
    assert mapping.status_code == 200


async def test_sessions_need_sessions_read(ui: Browser) -> None:
    await ui.ingest([session_line("s-1")])
    export_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in(
        await ui.token("settings.read", "settings.write", "exports.manage", name="no sessions")
    )
    for path in ("/ui/sessions", "/ui/sessions/1"):
        response = await ui.client.get(path)
        assert response.status_code == 403, path
        assert "sessions.read" in response.text
    page = await ui.page("/ui/exports")
    for action in ("/ui/exports/sample", "/ui/exports/test"):
        response = await ui.submit(page, f"/ui/exports/{export_id}", to=action)
        assert response.status_code == 403, action
        assert "sessions.read" in response.text
        assert not response.headers.get("content-disposition")
    nav = [a.text for a in page.root.one("nav").all("a")]
    assert nav == ["Exports", "Management zones", "Export health"]  # no link to a refused page


async def test_replay_and_test_export_need_exports_manage(ui: Browser) -> None:
    export_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in(await ui.token("settings.read", "settings.write", "sessions.read", name="no manage"))
    csrf = await ui.csrf()
    replay = await ui.post(f"/ui/health/{export_id}/replay", {"csrf": csrf, "letter": "1"})
    assert replay.status_code == 403 and "exports.manage" in replay.text
    page = await ui.page("/ui/exports")
    assert "Test export" not in page.buttons()
    test = await ui.submit(page, f"/ui/exports/{export_id}", to="/ui/exports/test")
    assert test.status_code == 403 and "exports.manage" in test.text


async def test_a_token_without_settings_read_sees_no_configuration(ui: Browser) -> None:
    await ui.create(export_value(ENDPOINT))
    await ui.logged_in(await ui.token("sessions.read", name="sessions only"))
    for path in ("/ui/exports", "/ui/zones", "/ui/health"):
        response = await ui.client.get(path)
        assert response.status_code == 403, path
        assert ENDPOINT not in response.text
    assert (await ui.client.get("/ui/sessions")).status_code == 200


# -- exports -----------------------------------------------------------------------------------------------


async def add_export(ui: Browser, entries: dict[str, str | None]) -> httpx.Response:
    page = await ui.page("/ui/exports")
    return await ui.submit(page, "/ui/exports", entries)


async def test_an_export_added_in_the_form_is_the_object_the_api_returns(ui: Browser) -> None:
    await ui.logged_in()
    empty = await ui.page("/ui/exports")
    assert "No exports yet" in empty.html
    response = await ui.submit(empty, "/ui/exports", OAUTH2_ENTRIES)
    assert response.status_code == 303
    [stored] = await ui.objects()
    assert response.headers["location"] == f"/ui/exports#export-{stored['objectId']}"
    assert stored["value"] == masked(OAUTH2_VALUE)
    assert stored["createdBy"] == "admin"  # the token's name, as the API records it
    assert await ui.plain_secret(stored["objectId"]) == SECRET

    # the API, given the same value, stores the same object
    api_id = await ui.create(OAUTH2_VALUE)
    by_api = next(o for o in await ui.objects() if o["objectId"] == api_id)
    assert by_api["value"] == stored["value"]

    page = await ui.follow(response)
    assert page.flash is not None and page.flash.startswith("Export added.")
    card = page.root.one(id=f"export-{stored['objectId']}")
    assert ENDPOINT in card.one("summary").text
    saved = form_data(page.form(f"/ui/exports/{stored['objectId']}"))
    assert saved["authentication.oAuth2.clientId"] == "client-1"
    assert saved["authentication.oAuth2.clientSecret"] == ""  # never sent back
    secret_input = card.one("input", name="authentication.oAuth2.clientSecret")
    assert "stored" in secret_input.attrs["placeholder"]


async def test_constraint_violations_are_shown_next_to_their_fields(ui: Browser) -> None:
    await ui.logged_in()
    response = await add_export(
        ui,
        {
            **OAUTH2_ENTRIES,
            "endpointDefinition.endpointUrl": "http://collector.example/sessions",
            "authentication.oAuth2.clientId": "",
        },
    )
    assert response.status_code == 400
    page = Page(response, parse(response.text))
    assert "https" in page.error_at("export-new", "endpointDefinition.endpointUrl")
    assert page.error_at("export-new", "authentication.oAuth2.clientId") == "must not be blank"
    card = page.root.one(id="export-new")
    assert "open" in card.attrs  # the refused form is shown open ...
    assert (
        page.field_value("export-new", "endpointDefinition.endpointUrl")
        == "http://collector.example/sessions"
    )
    assert page.field_value("export-new", "authentication.oAuth2.scope") == "sessions.write"  # ... as sent
    assert SECRET not in page.html and "fernet:" not in page.html
    assert card.one("input", name="endpointDefinition.endpointUrl").attrs.get("aria-invalid") == "true"
    assert card.one("input", name="endpointDefinition.endpointUrl").attrs.get("aria-required") == "true"
    # required only while its section is shown: marked by the page's script, which knows when
    user = card.one("input", name="authentication.basicAuth.username")
    assert "aria-required" not in user.attrs and "data-required" in user.attrs
    summary = card.one("p", **{"class": "problems"})  # also where the fields are far down the page
    assert summary.attrs["role"] == "alert" and "was not saved: see the fields marked below" in summary.text
    empty = await ui.page("/ui/exports")
    mapping = await ui.submit(
        empty, "/ui/exports", {"endpointDefinition.endpointUrl": ""}, to="/ui/exports/mapping"
    )
    assert mapping.status_code == 400 and not mapping.headers.get("content-disposition")
    refused = parse(mapping.text).one(id="export-new").one("p", **{"class": "problems"})
    assert "was not downloaded: see the fields marked below" in refused.text
    assert await ui.objects() == []


async def test_an_invalid_custom_configuration_and_elasticsearch_rules_are_shown(ui: Browser) -> None:
    await ui.logged_in()
    response = await add_export(
        ui,
        {
            "endpointDefinition.endpointUrl": "https://es.example.test:9200/sessions",
            "sendDirect.active": "true",
            "sendDirect.indexName": "rum",
            "exportBehavior.customConfiguration": '{"retries": "many"}',
        },
    )
    assert response.status_code == 400
    page = Page(response, parse(response.text))
    assert "retries" in page.error_at("export-new", "exportBehavior.customConfiguration")
    assert await ui.objects() == []
    response = await add_export(
        ui,
        {
            "endpointDefinition.endpointUrl": "https://es.example.test:9200/sessions",
            "sendDirect.active": "true",
            "sendDirect.indexName": "rum",
        },
    )
    page = Page(response, parse(response.text))
    assert response.status_code == 400
    assert "_bulk" in page.error_at("export-new", "endpointDefinition.endpointUrl")
    assert "application/x-ndjson" in page.error_at("export-new", "endpointDefinition.contentType")
    assert "POST" in page.error_at("export-new", "endpointDefinition.usePost")


async def test_stored_secrets_appear_in_no_page(ui: Browser) -> None:
    await ui.logged_in()
    assert (await add_export(ui, OAUTH2_ENTRIES)).status_code == 303
    basic = export_value(
        "https://basic.example/in",
        authentication={
            "active": True,
            "authType": "basic",
            "basicAuth": {"username": "u", "password": PASSWORD},
        },
    )
    basic_id = await ui.create(basic)
    [oauth_id] = [o["objectId"] for o in await ui.objects() if o["objectId"] != basic_id]
    await ui.ingest([session_line("s-secret")])
    [seq] = [s.seq for s in await ui.store.recent_sessions(limit=1)]

    pages = [
        await ui.page(path)
        for path in (
            "/ui/exports",
            "/ui/zones",
            "/ui/health",
            f"/ui/health/{oauth_id}/stats",
            f"/ui/health/{basic_id}/stats",
            "/ui/sessions",
            f"/ui/sessions/{seq}",
            "/ui/login",
        )
    ]
    exports_page = pages[0]
    # forms sent back refused still hold no secret: an edit with a violation, a sample with one
    refused = await ui.submit(
        exports_page, f"/ui/exports/{oauth_id}", {"endpointDefinition.endpointUrl": "http://plain.example/"}
    )
    assert refused.status_code == 400
    typed = await ui.submit(
        exports_page,
        f"/ui/exports/{oauth_id}",
        {
            "endpointDefinition.endpointUrl": "http://plain.example/",
            "authentication.oAuth2.clientSecret": "typed-9x",
        },
    )
    assert typed.status_code == 400 and "typed-9x" not in typed.text
    sample = await ui.submit(
        exports_page,
        f"/ui/exports/{basic_id}",
        {"endpointDefinition.endpointUrl": "http://plain.example/"},
        to="/ui/exports/sample",
    )
    assert sample.status_code == 400
    assert "This configuration was not downloaded" in sample.text and "not saved" not in sample.text
    texts = [p.html for p in pages] + [refused.text, typed.text, sample.text]
    for text in texts:
        assert SECRET not in text and PASSWORD not in text
        assert "fernet:" not in text
        assert MASK not in text  # not even the mask is filled into a field
    for object_id in (oauth_id, basic_id):
        card = exports_page.root.one(id=f"export-{object_id}")
        secrets_inputs = card.all("input", type="password")
        assert secrets_inputs and all("value" not in i.attrs for i in secrets_inputs)


async def test_editing_without_reentering_the_secret_keeps_it(ui: Browser) -> None:
    await ui.logged_in()
    assert (await add_export(ui, OAUTH2_ENTRIES)).status_code == 303
    [stored] = await ui.objects()
    object_id = stored["objectId"]
    page = await ui.page("/ui/exports")
    action = f"/ui/exports/{object_id}"

    response = await ui.submit(
        page,
        action,
        {"exportBehavior.customConfiguration": '{"retries": 1}', "endpointDefinition.usePost": None},
    )
    assert response.status_code == 303 and response.headers["location"] == f"/ui/exports#export-{object_id}"
    assert (await ui.follow(response)).flash == "Export saved."
    [edited] = await ui.objects()
    assert edited["value"]["exportBehavior"]["customConfiguration"] == '{"retries": 1}'
    assert edited["value"]["endpointDefinition"]["usePost"] is False
    assert edited["value"]["authentication"] == masked(OAUTH2_VALUE)["authentication"]
    assert await ui.plain_secret(object_id) == SECRET

    # where the secret would go changes: it must be entered again
    page = await ui.page("/ui/exports")
    before = await ui.snapshot()
    moved = await ui.submit(
        page, action, {"authentication.oAuth2.accessTokenUrl": "https://elsewhere.example/token"}
    )
    assert moved.status_code == 400
    refused = Page(moved, parse(moved.text))
    message = refused.error_at(f"export-{object_id}", "authentication.oAuth2.clientSecret")
    assert "re-enter the secret" in message
    secret = refused.root.one(id=f"export-{object_id}").one(
        "input", name="authentication.oAuth2.clientSecret"
    )
    assert secret.attrs["placeholder"] == "enter the secret"  # not "leave empty to keep it"
    assert await ui.snapshot() == before
    assert "open" in refused.root.one(id=f"export-{object_id}").attrs
    assert refused.field_value(f"export-{object_id}", "authentication.oAuth2.accessTokenUrl") == (
        "https://elsewhere.example/token"
    )
    endpoint_moved = await ui.submit(
        page, action, {"endpointDefinition.endpointUrl": "https://elsewhere.example/in"}
    )
    assert endpoint_moved.status_code == 400
    assert "re-enter the secret" in Page(endpoint_moved, parse(endpoint_moved.text)).error_at(
        f"export-{object_id}", "authentication.oAuth2.clientSecret"
    )

    # ... and with it entered again, both change
    entered = await ui.submit(
        page,
        action,
        {
            "authentication.oAuth2.accessTokenUrl": "https://elsewhere.example/token",
            "authentication.oAuth2.clientSecret": "new-secret",
        },
    )
    assert entered.status_code == 303
    [moved_value] = await ui.objects()
    assert (
        moved_value["value"]["authentication"]["oAuth2"]["accessTokenUrl"]
        == "https://elsewhere.example/token"
    )
    assert await ui.plain_secret(object_id) == "new-secret"


async def test_an_edit_based_on_a_stale_page_is_refused_and_the_form_read_again(ui: Browser) -> None:
    """Two tabs edit one export: the second save is refused, and its page shows what is saved
    now, so that saving again cannot quietly undo the first tab's change."""
    object_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in()
    stale = await ui.page("/ui/exports")
    action = f"/ui/exports/{object_id}"
    assert (await ui.submit(stale, action, {"endpointDefinition.usePost": "true"})).status_code == 303
    before = await ui.snapshot()
    conflict = await ui.submit(stale, action, {"endpointDefinition.contentType": "application/x-ndjson"})
    assert await ui.snapshot() == before
    again = await ui.follow(conflict)
    assert again.flash is not None and "changed meanwhile" in again.flash
    assert (
        await ui.submit(again, action, {"endpointDefinition.contentType": "application/x-ndjson"})
    ).status_code == 303
    [stored] = await ui.objects()
    endpoint = stored["value"]["endpointDefinition"]
    assert (endpoint["usePost"], endpoint["contentType"]) == (
        True,
        "application/x-ndjson",
    )  # both changes kept


async def test_saving_an_export_deleted_meanwhile_says_so(ui: Browser) -> None:
    object_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in()
    stale = await ui.page("/ui/exports")
    assert (await ui.api("DELETE", f"{OBJECTS}/{object_id}")).status_code == 204
    gone = await ui.submit(stale, f"/ui/exports/{object_id}", {"endpointDefinition.usePost": "true"})
    assert (await ui.follow(gone)).flash == "Not saved: that export no longer exists."
    assert await ui.objects() == []


async def test_pause_and_resume(ui: Browser) -> None:
    await ui.logged_in()
    assert (await add_export(ui, OAUTH2_ENTRIES)).status_code == 303
    [stored] = await ui.objects()
    object_id = stored["objectId"]
    page = await ui.page("/ui/exports")
    card = page.root.one(id=f"export-{object_id}")
    assert "Pause" in page.buttons(card) and "enabled" in card.one("summary").text

    paused = await ui.submit(page, f"/ui/exports/{object_id}/enabled")
    assert paused.status_code == 303
    [value] = [o["value"] for o in await ui.objects()]
    assert value["endpointDefinition"]["enableUserSessionExport"] is False
    assert value["authentication"] == masked(OAUTH2_VALUE)["authentication"]
    assert await ui.plain_secret(object_id) == SECRET  # the secret survives a pause
    page = await ui.follow(paused)
    assert page.flash is not None and page.flash.startswith("Export paused")
    card = page.root.one(id=f"export-{object_id}")
    assert "Resume" in page.buttons(card) and "paused" in card.one("summary").text

    resumed = await ui.submit(page, f"/ui/exports/{object_id}/enabled")
    assert resumed.status_code == 303
    [value] = [o["value"] for o in await ui.objects()]
    assert value["endpointDefinition"]["enableUserSessionExport"] is True
    assert await ui.plain_secret(object_id) == SECRET


async def test_delete_removes_the_export(ui: Browser) -> None:
    kept = await ui.create(export_value("https://kept.example/in"))
    object_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in()
    page = await ui.page("/ui/exports")
    response = await ui.submit(page, f"/ui/exports/{object_id}/delete")
    assert response.status_code == 303
    assert [o["objectId"] for o in await ui.objects()] == [kept]
    after = await ui.follow(response)
    assert after.flash == "Export deleted."
    assert not after.root.all(id=f"export-{object_id}")
    # the same form again: nothing left to delete, said so
    again = await ui.submit(page, f"/ui/exports/{object_id}/delete")
    assert (await ui.follow(again)).flash == "Not deleted: that export no longer exists."
    assert [o["objectId"] for o in await ui.objects()] == [kept]


async def test_a_fourth_export_is_neither_offered_nor_accepted(ui: Browser) -> None:
    await ui.create(export_value("https://one.example/in"))
    await ui.create(export_value("https://two.example/in"))
    await ui.logged_in()
    with_two = await ui.page("/ui/exports")
    assert with_two.has_form("/ui/exports")
    await ui.create(export_value("https://three.example/in"))
    with_three = await ui.page("/ui/exports")
    assert not with_three.has_form("/ui/exports")
    assert "Add export" not in with_three.buttons()
    assert "delete one to add another" in with_three.html
    # added meanwhile (another tab): the form submitted is kept, refused saying why
    response = await ui.submit(with_two, "/ui/exports", {"endpointDefinition.endpointUrl": ENDPOINT})
    assert response.status_code == 400
    assert "This configuration was not saved" in response.text
    assert "at most 3 objects" in response.text and "delete one before adding another" in response.text
    assert ENDPOINT in response.text
    assert len(await ui.objects()) == 3


# -- test export, sample data, mapping ----------------------------------------------------------------------


async def test_a_saved_export_without_sessions_to_sample_keeps_its_unsaved_edits(
    ui_tls: Browser, receiver: Receiver
) -> None:
    """Nothing is wrong with it: the reason, and the form as it was edited (not as saved, not
    "was not saved" as if a save had been refused, its secret still shown as stored); saving it
    later keeps the edits."""
    ui = await ui_tls.logged_in()
    entries = {
        **OAUTH2_ENTRIES,
        "endpointDefinition.endpointUrl": receiver.url,
        "authentication.oAuth2.accessTokenUrl": receiver.token_url,
    }
    assert (await add_export(ui, entries)).status_code == 303
    [stored] = await ui.objects()
    object_id = stored["objectId"]
    page = await ui.page("/ui/exports")
    edited = {"exportBehavior.customConfiguration": '{"retries": 5}'}
    nothing = await ui.submit(page, f"/ui/exports/{object_id}", edited, to="/ui/exports/sample")
    assert nothing.status_code == 200 and not nothing.headers.get("content-disposition")
    shown = Page(nothing, parse(nothing.text))
    assert shown.flash is not None and "No sessions from the last 7 days" in shown.flash
    assert shown.field_value(f"export-{object_id}", "exportBehavior.customConfiguration") == '{"retries": 5}'
    assert "was not saved" not in nothing.text and "they are not saved yet" in nothing.text
    card, secret = f"export-{object_id}", "authentication.oAuth2.clientSecret"
    assert "Stored and not shown: leave it empty to keep it." in shown.described(card, secret)
    saved_value = (await ui.objects())[0]["value"]
    assert saved_value["exportBehavior"]["customConfiguration"] == '{"retries": 2}'  # not saved
    saved = await ui.submit(shown, f"/ui/exports/{object_id}")
    assert saved.status_code == 303  # the secret left as stored, as the form says
    assert (await ui.objects())[0]["value"]["exportBehavior"]["customConfiguration"] == '{"retries": 5}'


async def test_a_test_export_from_the_form(ui_tls: Browser, receiver: Receiver) -> None:
    ui = await ui_tls.logged_in()
    page = await ui.page("/ui/exports")
    endpoint = {"endpointDefinition.endpointUrl": receiver.url}

    nothing = await ui.submit(page, "/ui/exports", endpoint, to="/ui/exports/test")
    assert nothing.status_code == 200
    assert "No sessions from the last 7 days" in nothing.text
    assert receiver.requests == []

    lines = sessions(3, seed=11)
    await ui.ingest(lines)
    sent = await ui.submit(page, "/ui/exports", endpoint, to="/ui/exports/test")
    assert sent.status_code == 200
    assert "Test export succeeded" in sent.text and "3 session(s) sent, HTTP 200" in sent.text
    [request] = receiver.requests
    assert request.method == "PUT" and sorted(request.lines) == sorted(lines)

    plain = await ui.submit(
        page, "/ui/exports", {"endpointDefinition.endpointUrl": "http://127.0.0.1:9/x"}, to="/ui/exports/test"
    )
    assert plain.status_code == 200
    fragment = parse(plain.text)
    # named as the form names the field, not by its path in the API
    assert (
        "Not sent" in fragment.text and "Define your endpoint / Endpoint URL: must use https" in fragment.text
    )
    assert "https" in fragment.text
    assert len(receiver.requests) == 1
    assert await ui.objects() == []  # a test saves nothing

    receiver.behaviour.basic = ("user", "right")  # and the form sends no credentials
    refused = await ui.submit(page, "/ui/exports", endpoint, to="/ui/exports/test")
    text = " ".join(parse(refused.text).text.split())
    assert "Test export failed: the endpoint refused the credentials (HTTP 401)," in text
    assert text.count("401") == 1


async def test_testing_a_saved_export_asks_for_its_secret_again(ui_tls: Browser, receiver: Receiver) -> None:
    """The saved export's secret field says "leave it empty to keep it". A test
    export needs the secret entered again (stored secrets are never sent back), and it must say so,
    as the API does, rather than call the field blank."""
    receiver.behaviour.oauth_clients = {"client-1": SECRET}
    ui = await ui_tls.logged_in()
    await ui.ingest(sessions(2, seed=16))
    entries = {
        **OAUTH2_ENTRIES,
        "endpointDefinition.endpointUrl": receiver.url,
        "authentication.oAuth2.accessTokenUrl": receiver.token_url,
    }
    assert (await add_export(ui, entries)).status_code == 303
    [stored] = await ui.objects()
    page = await ui.page("/ui/exports")
    form = f"/ui/exports/{stored['objectId']}"
    card, secret = f"export-{stored['objectId']}", "authentication.oAuth2.clientSecret"
    assert "Stored and not shown: leave it empty to keep it." in page.described(card, secret)
    assert "aria-required" not in page.form(form).one("input", name=secret).attrs  # it may stay empty

    refused = await ui.submit(page, form, to="/ui/exports/test")
    fragment = " ".join(parse(refused.text).text.split())
    assert "Not sent" in fragment and "OAuth 2.0 (Early Adopter) / Client secret:" in fragment
    assert "enter the secret again" in fragment, fragment
    assert receiver.requests == [] and receiver.token_requests == []

    entered = await ui.submit(
        page, form, {"authentication.oAuth2.clientSecret": SECRET}, to="/ui/exports/test"
    )
    assert "Test export succeeded" in entered.text


async def test_a_test_export_to_an_untrusted_certificate_fails_with_the_reason(
    ui: Browser, receiver: Receiver
) -> None:
    ui = await ui.logged_in()  # this server does not trust the receiver's test CA
    await ui.ingest(sessions(2, seed=15))
    page = await ui.page("/ui/exports")
    sent = await ui.submit(
        page, "/ui/exports", {"endpointDefinition.endpointUrl": receiver.url}, to="/ui/exports/test"
    )
    assert sent.status_code == 200
    fragment = " ".join(parse(sent.text).text.split())
    assert "Test export failed" in fragment
    assert "certificate" in fragment.lower()
    assert receiver.requests == []


async def test_a_test_export_with_oauth2_from_the_form(ui_tls: Browser, receiver: Receiver) -> None:
    receiver.behaviour.oauth_clients = {"client-1": SECRET}
    ui = await ui_tls.logged_in()
    await ui.ingest(sessions(2, seed=12))
    page = await ui.page("/ui/exports")
    entries = {
        **OAUTH2_ENTRIES,
        "endpointDefinition.endpointUrl": receiver.url,
        "authentication.oAuth2.accessTokenUrl": receiver.token_url,
        "authentication.oAuth2.scope": "",
    }
    sent = await ui.submit(page, "/ui/exports", entries, to="/ui/exports/test")
    assert "Test export succeeded" in sent.text, sent.text
    assert receiver.token_requests and receiver.token_requests[0]["client_id"] == "client-1"
    assert len(receiver.sessions()) == 2
    wrong = await ui.submit(
        page, "/ui/exports", {**entries, "authentication.oAuth2.clientSecret": "wrong"}, to="/ui/exports/test"
    )
    assert "Test export failed" in wrong.text and "the access token could not be obtained" in wrong.text
    assert SECRET not in wrong.text


async def test_sample_download_is_the_apis_sample(ui: Browser) -> None:
    await ui.logged_in()
    page = await ui.page("/ui/exports")
    empty = await ui.submit(page, "/ui/exports", ELASTICSEARCH_ENTRIES, to="/ui/exports/sample")
    assert empty.status_code == 200 and not empty.headers.get("content-disposition")
    again = Page(empty, parse(empty.text))
    assert "No sessions" in (again.flash or "")
    assert again.field_value("export-new", "sendDirect.indexName") == "rum"  # what was typed is kept

    lines = sessions(12, seed=13)
    await ui.ingest(lines)
    download = await ui.submit(page, "/ui/exports", ELASTICSEARCH_ENTRIES, to="/ui/exports/sample")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="sample.ndjson"'
    assert (
        len(download.content) >= 64 * 1024 and download.headers["content-encoding"] == "gzip"
    )  # as the API    assert download.headers["content-type"].startswith("application/x-ndjson")
    value = export_value(
        ELASTICSEARCH_ENTRIES["endpointDefinition.endpointUrl"] or "",
        endpointDefinition={"contentType": "application/x-ndjson", "usePost": True},
        sendDirect={"active": True, "indexName": "rum", "docType": "_doc"},
        exportBehavior={"customConfiguration": None},
    )
    by_api = await ui.api("POST", "/api/v2/exports/sample", json={"value": value})
    assert by_api.status_code == 200
    assert download.content.splitlines() == by_api.content.splitlines()
    documents = download.content.splitlines()[1::2]
    assert sorted(documents) == sorted(lines)  # the stored bytes, after their action lines


async def test_sample_download_of_a_saved_export_without_its_secret(ui: Browser) -> None:
    await ui.logged_in()
    assert (await add_export(ui, OAUTH2_ENTRIES)).status_code == 303
    [stored] = await ui.objects()
    await ui.ingest(sessions(2, seed=14))
    page = await ui.page("/ui/exports")
    download = await ui.submit(page, f"/ui/exports/{stored['objectId']}", to="/ui/exports/sample")
    assert download.status_code == 200 and len(download.content.splitlines()) == 2
    invalid = await ui.submit(
        page,
        f"/ui/exports/{stored['objectId']}",
        {"endpointDefinition.endpointUrl": "ftp://x"},
        to="/ui/exports/sample",
    )
    assert invalid.status_code == 400
    refused = Page(invalid, parse(invalid.text))
    assert refused.error_at(f"export-{stored['objectId']}", "endpointDefinition.endpointUrl")


@pytest.mark.parametrize("doc_type", ["_doc", ""])
async def test_mapping_download_is_the_apis_mapping(ui: Browser, doc_type: str) -> None:
    await ui.logged_in()
    page = await ui.page("/ui/exports")
    entries = {**ELASTICSEARCH_ENTRIES, "sendDirect.docType": doc_type}
    download = await ui.submit(page, "/ui/exports", entries, to="/ui/exports/mapping")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == 'attachment; filename="mapping.json"'
    value = export_value(
        ELASTICSEARCH_ENTRIES["endpointDefinition.endpointUrl"] or "",
        endpointDefinition={"contentType": "application/x-ndjson", "usePost": True},
        sendDirect={"active": True, "indexName": "rum", **({"docType": doc_type} if doc_type else {})},
    )
    by_api = await ui.api("POST", "/api/v2/exports/mapping", json={"value": value})
    assert by_api.status_code == 200
    assert download.json() == by_api.json()
    assert ("_doc" in download.json()["mappings"]) == bool(doc_type)


# -- management zones ---------------------------------------------------------------------------------------


async def test_a_zone_with_two_rules_shows_how_many_recent_sessions_it_matches(ui: Browser) -> None:
    countries = ["Poland"] * 3 + ["Austria"] * 2 + ["Germany"] * 4
    await ui.ingest([session_line(f"s-{n}", country=c) for n, c in enumerate(countries)])
    await ui.logged_in()
    page = await ui.page("/ui/zones")
    assert "open" in page.root.one(id="zone-new").attrs  # no zones yet: the form is open
    response = await ui.submit(
        page,
        "/ui/zones",
        {
            "name": "Central Europe",
            "description": "",
            "rules[0].attribute": "COUNTRY",
            "rules[0].value": "Poland",
            # the second rule, as "Add another rule" adds it
            "rules[1].enabled": "true",
            "rules[1].attribute": "COUNTRY",
            "rules[1].operator": "EQUALS",
            "rules[1].value": "austria",
        },
    )
    assert response.status_code == 303
    [zone] = await ui.objects(ZONE_SCHEMA)
    assert response.headers["location"] == f"/ui/zones#zone-{zone['objectId']}"
    assert zone["value"] == {
        "name": "Central Europe",
        "description": None,
        "rules": [
            {
                "enabled": True,
                "attribute": "COUNTRY",
                "operator": "EQUALS",
                "value": "Poland",
                "caseSensitive": False,
            },
            {
                "enabled": True,
                "attribute": "COUNTRY",
                "operator": "EQUALS",
                "value": "austria",
                "caseSensitive": False,
            },
        ],
    }
    second = await ui.submit(
        await ui.page("/ui/zones"),
        "/ui/zones",
        {
            "name": "Germany",
            "rules[0].attribute": "COUNTRY",
            "rules[0].operator": "CONTAINS",
            "rules[0].value": "erman",
        },
    )
    assert second.status_code == 303
    zones = await ui.follow(second)
    counts = {
        card.attrs["id"]: " ".join(card.one(**{"data-matches": None}).text.split())
        for card in zones.root.all("details")
        if card.attrs.get("id") != "zone-new"
    }
    germany = next(z["objectId"] for z in await ui.objects(ZONE_SCHEMA) if z["value"]["name"] == "Germany")
    assert counts == {
        f"zone-{zone['objectId']}": "5 recent session(s)",
        f"zone-{germany}": "4 recent session(s)",
    }
    assert "9 newest session(s)" in " ".join(zones.html.split())


async def test_zone_violations_are_shown_next_to_their_fields(ui: Browser) -> None:
    await ui.create({"name": "Taken", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA)
    await ui.logged_in()
    page = await ui.page("/ui/zones")
    response = await ui.submit(
        page,
        "/ui/zones",
        {
            "name": "taken",
            "rules[0].attribute": "APPLICATION_NAME",
            "rules[0].operator": "REGEX",
            "rules[0].value": "(shop",
        },
    )
    assert response.status_code == 400
    refused = Page(response, parse(response.text))
    assert "regular expression" in refused.error_at("zone-new", "rules[0].value")
    assert refused.field_value("zone-new", "rules[0].value") == "(shop"
    summary = refused.root.one(id="zone-new").one("p", **{"class": "problems"})
    assert summary.attrs["role"] == "alert" and "not saved: see the fields marked below" in summary.text

    # in the form's words: the rule offered blank is no rule, and an unchosen choice is not "null"
    no_rules = await ui.submit(page, "/ui/zones", {"name": "Empty"})
    assert no_rules.status_code == 400
    shown = Page(no_rules, parse(no_rules.text))
    rules = shown.root.one(id="zone-new").one("fieldset", **{"data-list": "rules"})
    [said] = [" ".join(shown.root.one(id=i).text.split()) for i in rules.attrs["aria-describedby"].split()]
    assert said == "fill in at least one rule"
    unchosen = await ui.submit(page, "/ui/zones", {"name": "Half", "rules[0].value": "Poland"})
    assert Page(unchosen, parse(unchosen.text)).error_at("zone-new", "rules[0].attribute") == "choose one"
    assert len(await ui.objects(ZONE_SCHEMA)) == 1


async def test_editing_a_zone(ui: Browser) -> None:
    zone_id = await ui.create(
        {
            "name": "Z",
            "rules": [
                {"attribute": "COUNTRY", "value": "Poland"},
                {"attribute": "COUNTRY", "value": "Austria"},
            ],
        },
        ZONE_SCHEMA,
    )
    await ui.logged_in()
    page = await ui.page("/ui/zones")
    # a rule whose value was emptied is one to complete (its attribute is still chosen), not a removal
    emptied = await ui.submit(
        page, f"/ui/zones/{zone_id}", {"rules[0].value": "", "rules[1].value": "Czechia"}
    )
    assert emptied.status_code == 400 and "must not be blank" in emptied.text
    [zone] = await ui.objects(ZONE_SCHEMA)
    assert [r["value"] for r in zone["value"]["rules"]] == ["Poland", "Austria"]  # nothing changed
    response = await ui.submit(
        page, f"/ui/zones/{zone_id}", {"rules[0]._remove": "on", "rules[1].value": "Czechia"}
    )
    assert response.status_code == 303
    [zone] = await ui.objects(ZONE_SCHEMA)
    assert [r["value"] for r in zone["value"]["rules"]] == ["Czechia"]  # the rule ticked for removal is gone


async def test_a_zone_edited_in_another_tab_is_not_overwritten(ui: Browser) -> None:
    zone_id = await ui.create(
        {"name": "Z", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    await ui.logged_in()
    stale = await ui.page("/ui/zones")
    action = f"/ui/zones/{zone_id}"
    assert (await ui.submit(stale, action, {"description": "first tab"})).status_code == 303
    conflict = await ui.submit(stale, action, {"rules[0].value": "Austria"})
    again = await ui.follow(conflict)
    assert again.flash is not None and "changed meanwhile" in again.flash
    assert (await ui.submit(again, action, {"rules[0].value": "Austria"})).status_code == 303
    [zone] = await ui.objects(ZONE_SCHEMA)
    assert (zone["value"]["description"], zone["value"]["rules"][0]["value"]) == ("first tab", "Austria")


async def test_a_zone_used_by_an_export_cannot_be_deleted(ui: Browser) -> None:
    zone_id = await ui.create(
        {"name": "Used", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    export_id = await ui.create(export_value(ENDPOINT, exportBehavior={"managementZone": zone_id}))
    await ui.logged_in()
    page = await ui.page("/ui/zones")
    response = await ui.submit(page, f"/ui/zones/{zone_id}/delete")
    assert response.status_code == 303
    refused = await ui.follow(response)
    assert refused.flash is not None and refused.flash.startswith("Not deleted")
    assert export_id in refused.flash
    assert [z["objectId"] for z in await ui.objects(ZONE_SCHEMA)] == [zone_id]
    # the export page offers the zone by name
    exports_page = await ui.page("/ui/exports")
    select = exports_page.root.one(id=f"export-{export_id}").one(
        "select", name="exportBehavior.managementZone"
    )
    assert [(o.attrs["value"], o.text) for o in select.all("option") if "selected" in o.attrs] == [
        (zone_id, "Used")
    ]

    unzoned = await ui.submit(exports_page, f"/ui/exports/{export_id}", {"exportBehavior.managementZone": ""})
    assert unzoned.status_code == 303
    page = await ui.page("/ui/zones")
    deleted = await ui.submit(page, f"/ui/zones/{zone_id}/delete")
    assert (await ui.follow(deleted)).flash == "Management zone deleted."
    assert await ui.objects(ZONE_SCHEMA) == []


# -- export health --------------------------------------------------------------------------------------------


def health_numbers(page: Page, object_id: str) -> dict[str, Any]:
    block = page.root.one("section", **{"data-export": object_id})

    def number(attribute: str) -> int:
        return int(block.one(**{attribute: None}).text.strip().replace(",", ""))

    return {
        "state": block.one(**{"data-state": None}).text.strip(),
        "deliveredSessions": number("data-delivered"),
        "failedSessions": number("data-failed"),
        "backlog": number("data-backlog"),
        "deadLetters": number("data-dead-letters"),
    }


async def test_health_page_numbers_are_the_status_apis(live: Browser, receiver: Receiver) -> None:
    ui = await live.logged_in()
    object_id = await ui.create(export_value(receiver.url))
    paused_id = await ui.create(
        export_value("https://paused.example/in", endpointDefinition={"enableUserSessionExport": False})
    )
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")
    lines = sessions(7, seed=21)
    await ui.ingest(lines)
    await until(lambda: len(receiver.sessions()) == 7, "7 sessions delivered")

    async def recorded() -> bool:
        return bool((await ui.status(object_id))["deliveredSessions"] == 7)

    await until(recorded, "delivery recorded")
    page = await ui.page("/ui/health")
    for export_id in (object_id, paused_id):
        status = await ui.status(export_id)
        shown = health_numbers(page, export_id)
        assert shown == {name: status[name] for name in shown}, export_id
    assert health_numbers(page, object_id)["deliveredSessions"] == 7
    assert health_numbers(page, object_id)["state"] == "running"
    assert health_numbers(page, paused_id)["state"] == "paused"
    for export_id in (object_id, paused_id):  # the part refreshed in place says the same
        stats = await ui.page(f"/ui/health/{export_id}/stats")
        assert health_numbers(stats, export_id) == health_numbers(page, export_id)
    gone = await ui.client.get("/ui/health/no-such-export/stats")
    assert gone.status_code == 286 and gone.text == ""  # htmx: stop polling
    chart = page.root.one(id=f"health-{object_id}").one(**{"data-chart": None})
    assert chart.attrs["data-chart"] == f"/ui/health/{object_id}/series"


async def test_delivery_series_counts_the_last_hour_by_minute(live: Browser, receiver: Receiver) -> None:
    ui = await live.logged_in()
    object_id = await ui.create(export_value(receiver.url))
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")
    await ui.ingest(sessions(5, seed=22))
    await until(lambda: len(receiver.sessions()) == 5, "5 sessions delivered")

    async def series() -> dict[str, list[int]]:
        response = await ui.client.get(f"/ui/health/{object_id}/series")
        assert response.status_code == 200, response.text
        body: dict[str, list[int]] = response.json()
        return body

    async def counted() -> bool:
        return sum((await series())["delivered"]) == 5

    await until(counted, "5 deliveries in the series")
    asked_s = now_ms() // 1000
    body = await series()
    now_s = now_ms() // 1000
    assert len(body["t"]) == len(body["delivered"]) == len(body["failed"]) == 61
    assert all(b - a == 60 for a, b in zip(body["t"], body["t"][1:], strict=False))
    assert all(t % 60 == 0 for t in body["t"])
    assert asked_s - 60 < body["t"][-1] <= now_s  # the minute the request was answered in
    assert body["t"][0] <= now_s - 3600
    assert sum(body["failed"]) == 0
    assert body["delivered"][-1] + body["delivered"][-2] == 5  # delivered within the last minute or two
    unknown = await ui.client.get("/ui/health/no-such-export/series")
    assert unknown.status_code in (200, 404)
    if unknown.status_code == 200:
        assert sum(unknown.json()["delivered"]) == 0


async def dead_letter_made(config: ServerConfig, **sections: Any) -> str:
    """An export (``export_value`` sections) whose one session became a dead letter, its endpoint
    refusing every bulk, on a server of ``config`` since stopped; its objectId."""
    refusing = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)  # every bulk fails
    url = f"http://127.0.0.1:{refusing.sockets[0].getsockname()[1]}/events"
    try:
        async with open_ui(config) as server:
            object_id = await server.create(
                export_value(url, {"retries": 0, "flushIntervalSeconds": 0.1}, **sections)
            )

            async def started() -> bool:  # its cursor is set: it begins at "now", so ingest after
                return (await server.status(object_id))["position"] is not None

            await until(started, "exporter started")
            await server.ingest([session_line("dead-lettered")])

            async def dead_lettered() -> bool:
                return bool((await server.status(object_id))["deadLetters"] == 1)

            await until(dead_lettered, "a dead letter")
            return object_id
    finally:
        refusing.close()
        await refusing.wait_closed()


async def replay_flash(config: ServerConfig, object_id: str) -> str | None:
    """What the health page says to replaying the export's one dead letter on a server of ``config``
    (which leaves it pending)."""
    async with open_ui(config) as server:
        ui = await server.logged_in()
        replay = f"/ui/health/{object_id}/replay"
        [row] = (await ui.page("/ui/health")).root.one(id=f"health-{object_id}").one("tbody").all("tr")
        page = await ui.follow(await ui.send(row.one("form", action=replay)))
        assert (await ui.status(object_id))["deadLetters"] == 1  # still pending
        return page.flash


async def test_a_replay_this_server_may_not_send_is_refused_on_the_health_page(tmp_path: Path) -> None:
    """A dead letter of an http:// export stored while loopback http was allowed: a server that
    no longer allows it sends nothing, and the page says why."""
    config = ServerConfig(data_dir=tmp_path / "data", allow_http_loopback=True)
    object_id = await dead_letter_made(config)
    flash = await replay_flash(replace(config, allow_http_loopback=False, run_exporters=False), object_id)
    assert flash is not None and flash.startswith("Not replayed: http:// URL refused")


async def test_a_replay_whose_secrets_this_server_cannot_decrypt_is_refused_on_the_health_page(
    tmp_path: Path,
) -> None:
    """Started with another key than the one the export's password was stored with: a replay
    sends nothing, and the page says why (it was a 500)."""
    config = ServerConfig(data_dir=tmp_path / "data", allow_http_loopback=True, secret_keys=new_key())
    basic = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": "pw"}}
    object_id = await dead_letter_made(config, authentication=basic)
    flash = await replay_flash(replace(config, secret_keys=new_key(), run_exporters=False), object_id)
    assert flash is not None
    assert flash.startswith("Not replayed: this server's keys cannot decrypt the export's secrets")


async def test_more_dead_letters_than_a_page_holds_are_paged(live: Browser, receiver: Receiver) -> None:
    ui = await live.logged_in()
    receiver.behaviour.script = deque([500] * 53)
    object_id = await ui.create(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 1}))
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")
    await ui.ingest(sessions(53, seed=29))

    async def dead_lettered() -> bool:
        return bool((await ui.status(object_id))["deadLetters"] == 53)

    await until(dead_lettered, "53 dead letters")
    card = (await ui.page("/ui/health")).root.one(id=f"health-{object_id}")
    newest = [int(row.all("td")[0].text) for row in card.one("tbody").all("tr")]
    assert len(newest) == 50 and newest == sorted(newest, reverse=True)
    assert "50 of 53 pending dead letters shown" in card.one("p", **{"class": "note"}).text
    [older] = [a.attrs["href"] for a in card.all("a") if a.text == "Older dead letters"]
    card = (await ui.page(f"/ui/health{older.split('#')[0]}")).root.one(id=f"health-{object_id}")
    rest = [int(row.all("td")[0].text) for row in card.one("tbody").all("tr")]
    assert len(rest) == 3 and max(rest) < min(newest)


async def test_exports_to_one_endpoint_are_named_apart(ui: Browser) -> None:
    await ui.logged_in()
    bulk = "https://es.example:9200/_bulk"
    direct = {
        "endpointDefinition": {"endpointUrl": bulk, "contentType": "application/x-ndjson", "usePost": True}
    }
    ids = [
        await ui.create({**direct, "sendDirect": {"active": True, "indexName": index}})
        for index in ("web", "mobile")
    ] + [await ui.create(export_value(ENDPOINT))]
    page = await ui.page("/ui/exports")
    titles = [s.text for s in page.root.all("h2", **{"class": "title"})]
    assert f"{bulk} → index web" in titles and f"{bulk} → index mobile" in titles and ENDPOINT in titles
    health = await ui.page("/ui/health")
    names = [health.root.one(id=f"health-{i}").one("h2").text for i in ids]
    assert names == [f"{bulk} → index web", f"{bulk} → index mobile", ENDPOINT]


async def test_dead_letters_are_replayed_from_the_health_page(live: Browser, receiver: Receiver) -> None:
    ui = await live.logged_in()
    receiver.behaviour.script = deque([500, 500, 500])  # three bulks fail; the endpoint is fine after
    object_id = await ui.create(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")
    lines = sessions(6, seed=23)
    await ui.ingest(lines)

    async def dead_lettered() -> bool:
        return bool((await ui.status(object_id))["deadLetters"] == 3)

    await until(dead_lettered, "three dead letters")
    assert (await ui.status(object_id))["failedSessions"] == 6
    replay = f"/ui/health/{object_id}/replay"
    page = await ui.page("/ui/health")
    assert health_numbers(page, object_id)["deadLetters"] == 3
    assert health_numbers(page, object_id)["failedSessions"] == 6
    rows = page.root.one(id=f"health-{object_id}").one("tbody").all("tr")
    letters = [form_data(row.one("form", action=replay))["letter"] for row in rows]
    pending = (await ui.api("GET", f"/api/v2/exports/{object_id}/deadletters")).json()["deadLetters"]
    assert sorted(letters) == sorted(str(d["id"]) for d in pending) and len(letters) == 3
    first = letters[-1]

    # the endpoint still fails: the letter stays pending, and the page says why
    receiver.behaviour.script.append(503)
    failed = await ui.send(rows[-1].one("form", action=replay))
    assert failed.status_code == 303 and failed.headers["location"] == f"/ui/health#health-{object_id}"
    # another tab's refresh of the numbers meanwhile leaves the message to the page
    stats = await ui.client.get(f"/ui/health/{object_id}/stats", headers={"HX-Request": "true"})
    assert stats.status_code == 200 and "data-delivered" in stats.text
    page = await ui.follow(failed)
    assert page.flash is not None and page.flash.startswith("Replayed 0 of 1 dead letter(s). Still failing:")
    # said in the export's card, where the redirect scrolls to: the page's top is out of sight
    [said] = page.root.all("p", **{"class": "flash"})
    assert said in page.root.one(id=f"health-{object_id}").all("p")
    last_error = page.root.one("section", **{"data-export": object_id}).one("p", **{"class": "error"})
    assert re.match(r"Last error, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(.* ago\): ", last_error.text)
    assert health_numbers(page, object_id)["deadLetters"] == 3
    # its reason is now why it failed this time (why it failed before is in its attempts)
    pending = (await ui.api("GET", f"/api/v2/exports/{object_id}/deadletters")).json()["deadLetters"]
    [letter] = [d for d in pending if str(d["id"]) == first]
    assert letter["reason"].startswith("Request failed: HTTP 503"), letter["reason"]
    assert next(d["reason"] for d in pending if str(d["id"]) != first).startswith("Request failed: HTTP 500")

    # it works now
    rows = page.root.one(id=f"health-{object_id}").one("tbody").all("tr")
    [row] = [r for r in rows if form_data(r.one("form", action=replay))["letter"] == first]
    page = await ui.follow(await ui.send(row.one("form", action=replay)))
    assert page.flash == "Replayed 1 of 1 dead letter(s)."
    replayed = (
        await ui.api("GET", f"/api/v2/exports/{object_id}/deadletters", params={"state": "replayed"})
    ).json()["deadLetters"]
    assert [str(d["id"]) for d in replayed] == [first] and replayed[0]["replayedAt"] is not None
    assert health_numbers(page, object_id)["deadLetters"] == 2

    # the two left, with one button
    [replay_all] = [f for f in page.root.all("form", action=replay) if "letter" not in form_data(f)]
    assert page.buttons(replay_all) == ["Replay all 2 dead letters"]
    page = await ui.follow(await ui.send(replay_all))  # in the background: minutes for thousands
    assert page.flash is not None and page.flash.startswith("Replaying 2 dead letters in the background:")

    async def none_pending() -> bool:
        response = await ui.api("GET", f"/api/v2/exports/{object_id}/deadletters")
        return bool(response.json()["deadLetters"] == [])

    await until(none_pending, "both replayed")
    page = await ui.page("/ui/health")
    assert sorted(receiver.sessions()) == sorted(lines)
    assert "No dead letters" in page.root.one(id=f"health-{object_id}").text
    assert health_numbers(page, object_id)["deadLetters"] == 0

    # replaying one again: nothing left, said so
    again = await ui.post(replay, {"csrf": await ui.csrf(), "letter": first})
    assert (await ui.follow(again)).flash == (
        "Nothing to replay: the dead letter was replayed already, or there is none pending."
    )


async def test_discard_and_replay_all_take_the_letters_the_page_counted_not_those_kept_since(
    live: Browser, receiver: Receiver
) -> None:
    ui = await live.logged_in()
    receiver.behaviour.script = deque([500, 500, 500])  # three bulks fail; the endpoint is fine after
    object_id = await ui.create(export_value(receiver.url, {"retries": 0, "flushMaxSessions": 2}))
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")

    async def pending() -> list[int]:
        letters = (await ui.api("GET", f"/api/v2/exports/{object_id}/deadletters")).json()["deadLetters"]
        return sorted(int(d["id"]) for d in letters)

    await ui.ingest(sessions(4, seed=31))
    await until(lambda: _count(pending, 2), "two dead letters")
    counted = await pending()
    page = await ui.page("/ui/health")  # what the operator reads, counts and confirms
    discard = page.form(f"/ui/health/{object_id}/discard")
    assert "Discard the 2 pending dead letter(s)" in discard.attrs["data-confirm"]
    replay = f"/ui/health/{object_id}/replay"
    [replay_all] = [f for f in page.root.all("form", action=replay) if "letter" not in form_data(f)]
    await ui.ingest(sessions(2, seed=32))
    await until(lambda: _count(pending, 3), "a third, kept after the page was read")
    [kept_since] = [i for i in await pending() if i not in counted]

    replayed = await ui.follow(await ui.send(replay_all))
    assert replayed.flash is not None and replayed.flash.startswith("Replaying 2 dead letters")
    await until(lambda: _count(pending, 1), "the two counted, replayed")
    assert await pending() == [kept_since]
    discarded = await ui.follow(await ui.send(discard))  # the page's count is gone: nothing more goes
    assert discarded.flash == "Discarded 0 dead letter(s) holding 0 session(s)."
    assert await pending() == [kept_since]
    uncounted = await ui.post(f"/ui/health/{object_id}/discard", {"csrf": await ui.csrf()})  # no count sent
    assert (await ui.follow(uncounted)).flash == (
        "The page was out of date: read the dead letters again, then discard them."
    )
    assert await pending() == [kept_since]

    # a message about an export deleted before the page was read again is said at its top
    last = await ui.send((await ui.page("/ui/health")).form(f"/ui/health/{object_id}/discard"))
    assert (await ui.api("DELETE", f"/api/v2/settings/objects/{object_id}")).status_code == 204
    gone = await ui.follow(last)
    assert gone.flash == "Discarded 1 dead letter(s) holding 2 session(s)."
    assert not gone.root.all("article")  # no card to say it in


async def _count(letters: Callable[[], Awaitable[list[int]]], count: int) -> bool:
    return len(await letters()) == count


async def test_an_export_with_pending_dead_letters_is_deleted_only_once_they_are_discarded(
    live: Browser, receiver: Receiver
) -> None:
    """Nothing is discarded without being asked to: the delete is refused while dead letters are
    pending; discarding them is its own, confirmed, action. After the delete, neither the
    export's position nor its letters (session content nothing could reach) are left, and its
    alerts are closed."""
    ui = await live.logged_in()
    receiver.behaviour.script = deque([500])
    object_id = await ui.create(export_value(receiver.url, {"retries": 0}))
    await until(lambda: ui.app.state.exports.is_running(object_id), "exporter running")
    await ui.ingest(sessions(2, seed=24))

    async def dead_lettered() -> bool:
        return bool((await ui.status(object_id))["deadLetters"] == 1)

    await until(dead_lettered, "a dead letter")
    page = await ui.page("/ui/exports")
    refused = await ui.follow(await ui.submit(page, f"/ui/exports/{object_id}/delete"))
    assert (
        refused.flash is not None
        and "has 1 pending dead letter(s): replay or discard them first" in refused.flash
    )
    assert [o["objectId"] for o in await ui.objects()] == [object_id]

    health = await ui.page("/ui/health")
    discard = health.form(f"/ui/health/{object_id}/discard")
    assert "for good" in discard.attrs["data-confirm"]
    discarded = await ui.follow(await ui.send(discard))
    assert discarded.flash == "Discarded 1 dead letter(s) holding 2 session(s)."

    page = await ui.page("/ui/exports")
    assert (await ui.submit(page, f"/ui/exports/{object_id}/delete")).status_code == 303
    assert await ui.objects() == []

    async def cursor_gone() -> bool:
        return await ui.store.get_cursor(object_id) is None

    await until(cursor_gone, "the export's position deleted")
    assert await ui.store.list_dead_letters(object_id, state=None) == []
    assert not [a for a in await ui.store.list_alerts(open_only=True) if a.export_id == object_id]


# -- sessions -----------------------------------------------------------------------------------------------------


async def test_sessions_are_listed_newest_first_and_found_by_id_or_user(ui: Browser) -> None:
    for n, user in enumerate(["anna", "bert", "anna", "carl"]):
        await ui.ingest([session_line(f"visit-{n}", userId=user)])  # one request each: known order
    await ui.logged_in()
    page = await ui.page("/ui/sessions")

    def listed(page: Page) -> list[str]:
        return [row.all("td")[1].text.strip() for row in page.root.one("tbody").all("tr")]

    assert listed(page) == ["visit-3", "visit-2", "visit-1", "visit-0"]
    assert listed(await ui.page("/ui/sessions", q="visit-1", by="userSessionId")) == ["visit-1"]
    assert listed(await ui.page("/ui/sessions", q="anna", by="userId")) == ["visit-2", "visit-0"]
    assert listed(await ui.page("/ui/sessions", q=" carl ", by="userId")) == ["visit-3"]
    none = await ui.page("/ui/sessions", q="nobody", by="userId")
    assert not none.root.all("tbody") and "No session with user id" in none.html
    assert listed(await ui.page("/ui/sessions", q="visit-2", by="nonsense")) == ["visit-2"]


async def test_sessions_are_paged(ui: Browser) -> None:
    lines = sessions(55, seed=31)
    await ui.ingest(lines)
    await ui.logged_in()
    first = await ui.page("/ui/sessions")
    rows = first.root.one("tbody").all("tr")
    assert len(rows) == 50
    [older] = [a for a in first.root.all("a") if a.text.strip() == "Older sessions"]
    second = await ui.page(older.attrs["href"])
    ids = [r.all("td")[1].text.strip() for r in [*rows, *second.root.one("tbody").all("tr")]]
    assert sorted(ids) == sorted(orjson.loads(line)["userSessionId"] for line in lines)
    assert not [a for a in second.root.all("a") if a.text.strip() == "Older sessions"]


async def test_a_page_of_large_sessions_stops_at_its_bytes_and_the_rest_follow(
    ui: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each listed session is read whole to be shown: fifty of megabytes each would be too many."""
    lines = sessions(7, seed=32)
    await ui.ingest(lines)
    await ui.logged_in()
    monkeypatch.setattr(web_sessions, "PAGE_BYTES", 3 * max(map(len, lines)))  # three or more a page
    ids: list[str] = []
    pages = 0
    page = await ui.page("/ui/sessions")
    while True:
        pages += 1
        ids += [r.all("td")[1].text.strip() for r in page.root.one("tbody").all("tr")]
        older = [a for a in page.root.all("a") if a.text.strip() == "Older sessions"]
        if not older:
            break
        page = await ui.page(older[0].attrs["href"])
    assert pages >= 2 and sorted(ids) == sorted(orjson.loads(line)["userSessionId"] for line in lines)
    monkeypatch.setattr(web_sessions, "PAGE_BYTES", 1)  # each page cut after its one session
    page, pages = await ui.page("/ui/sessions"), 1
    while older := [a for a in page.root.all("a") if a.text.strip() == "Older sessions"]:
        page, pages = await ui.page(older[0].attrs["href"]), pages + 1
        assert len(page.root.one("tbody").all("tr")) == 1  # no empty page at the end
    assert pages == len(lines)


async def test_a_search_by_user_is_paged_too(ui: Browser) -> None:
    await ui.ingest([session_line(f"pat-{n}", userId="pat") for n in range(52)])
    await ui.ingest([session_line(f"other-{n}", userId="other") for n in range(3)])
    await ui.logged_in()
    first = await ui.page("/ui/sessions", by="userId", q="pat")
    rows = first.root.one("tbody").all("tr")
    [older] = [a for a in first.root.all("a") if a.text.strip() == "Older sessions"]
    second = await ui.page(older.attrs["href"])
    assert second.form("/ui/sessions").one("input", name="q").attrs["value"] == "pat"
    ids = [r.all("td")[1].text.strip() for r in [*rows, *second.root.one("tbody").all("tr")]]
    assert ids == [f"pat-{n}" for n in reversed(range(52))]


async def test_a_session_page_shows_its_user_actions_and_raw_json(ui: Browser) -> None:
    line = session_line("visit-detail", userId="dora")
    await ui.ingest([session_line("before"), line, session_line("after")])
    document = orjson.loads(line)
    await ui.logged_in()
    listing = await ui.page("/ui/sessions", q="visit-detail")
    [link] = listing.root.one("tbody").all("a")
    page = await ui.page(link.attrs["href"])
    assert "visit-detail" in page.root.one("h1").text
    rows = page.root.one("tbody").all("tr")
    actions = document["userActions"]
    assert len(rows) == len(actions) > 1
    for row, action in zip(rows, actions, strict=True):
        cells = row.all("td")
        assert cells[1].text == action["name"]
        assert cells[2].text == (action.get("type") or "—")
    raw = page.root.one("pre").text
    assert orjson.loads(raw) == document
    missing = await ui.client.get("/ui/sessions/999999")
    assert missing.status_code == 404
    assert "No such session" in missing.text


async def test_a_deeply_nested_session_is_shown_as_stored(ui: Browser) -> None:
    """Deeper than a re-serialisation could go (orjson stops at 255 levels): the stored bytes are
    indented as they are, their escapes kept."""
    deep = session_line("deep")[:-1] + b',"x":' + b"[" * 300 + b'"\\u00e9"' + b"]" * 300 + b"}"
    await ui.ingest([deep])
    await ui.logged_in()
    [link] = (await ui.page("/ui/sessions", q="deep")).root.one("tbody").all("a")
    response = await ui.client.get(link.attrs["href"])
    assert response.status_code == 200
    raw = (await ui.page(link.attrs["href"])).root.one("pre").text
    assert orjson.loads(raw) == orjson.loads(deep)
    assert '"\\u00e9"' in raw  # the escape as sent, not re-encoded


async def test_a_session_nested_deeper_than_a_page_can_read_is_listed_by_its_identity(ui: Browser) -> None:
    """Ingest reads a session with the call stack of a worker thread, a page with a deeper one: a
    field of the sender's own nested near the limit is stored, and must not fail every page that
    lists it. (Appended as stored, deeper than any stack reads, to make it so here.)"""
    deep = session_line("too-deep")[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    await ui.store.append_sessions(
        [
            NewSession(
                "t1", "too-deep", 1_700_000_000_000, 1_700_000_060_000, None, None, None, None, (), deep
            )
        ],
        received_at=now_ms(),
    )
    await ui.ingest([session_line("plain")])
    await ui.logged_in()
    links = {a.text: a.attrs["href"] for a in (await ui.page("/ui/sessions")).root.one("tbody").all("a")}
    assert set(links) == {"too-deep", "plain"}
    page = await ui.page(links["too-deep"])
    assert page.root.one("pre").text.startswith(deep[:60].decode())  # as stored


async def test_a_session_with_a_number_no_double_holds_is_listed_and_shown(ui: Browser) -> None:
    """Valid JSON that a float parser refuses, in a field of the sender's own (kept unread at
    ingest): the pages show the session from its model's fields, the raw JSON as stored."""
    huge = session_line("huge")[:-1] + b',"senderScore":1e999}'
    await ui.ingest([session_line("plain"), huge])
    await ui.logged_in()
    listing = await ui.page("/ui/sessions")
    links = {a.text: a.attrs["href"] for a in listing.root.one("tbody").all("a")}
    assert set(links) == {"huge", "plain"}
    page = await ui.page(links["huge"])
    assert len(page.root.one("tbody").all("tr")) == len(orjson.loads(session_line("huge"))["userActions"])
    assert '"senderScore": 1e999' in page.root.one("pre").text


async def test_a_session_page_shows_user_actions_without_times(ui: Browser) -> None:
    await ui.ingest([session_line("bare-actions", userActions=[{}, {"name": "click on Buy"}])])
    await ui.logged_in()
    [link] = (await ui.page("/ui/sessions", q="bare-actions")).root.one("tbody").all("a")
    page = await ui.page(link.attrs["href"])
    rows = [[cell.text for cell in row.all("td")] for row in page.root.one("tbody").all("tr")]
    assert [row[1:6] for row in rows] == [["—"] * 5, ["click on Buy", "—", "—", "—", "—"]]


async def test_user_content_is_escaped(ui: Browser) -> None:
    attack = '<script>alert("x")</script>'
    await ui.ingest([session_line(attack, userId=attack)])
    await ui.create({"name": attack, "rules": [{"attribute": "COUNTRY", "value": attack}]}, ZONE_SCHEMA)
    [seq] = [s.seq for s in await ui.store.recent_sessions(limit=1)]
    await ui.logged_in()
    for path in ("/ui/sessions", "/ui/zones", f"/ui/sessions/{seq}"):
        page = await ui.page(path)
        assert attack not in page.html, path
        assert not [s for s in page.root.all("script") if "alert" in s.text], path


async def test_a_delete_form_deletes_only_its_own_kind_of_object(ui: Browser) -> None:
    export_id = await ui.create(export_value(ENDPOINT))
    zone_id = await ui.create(
        {"name": "Z", "rules": [{"attribute": "COUNTRY", "value": "Poland"}]}, ZONE_SCHEMA
    )
    await ui.logged_in()
    csrf = await ui.csrf()
    as_zone = await ui.post(f"/ui/zones/{export_id}/delete", {"csrf": csrf})
    assert (await ui.follow(as_zone)).flash == "Not deleted: that management zone no longer exists."
    as_export = await ui.post(f"/ui/exports/{zone_id}/delete", {"csrf": csrf})
    assert (await ui.follow(as_export)).flash == "Not deleted: that export no longer exists."
    assert [o["objectId"] for o in await ui.objects()] == [export_id]
    assert [o["objectId"] for o in await ui.objects(ZONE_SCHEMA)] == [zone_id]


async def test_a_delete_from_a_page_read_before_a_change_says_so_in_the_page_s_words(ui: Browser) -> None:
    export_id = await ui.create(export_value(ENDPOINT))
    [read] = await ui.objects()  # the page as loaded in one tab
    value = read["value"] | {"endpointDefinition": read["value"]["endpointDefinition"] | {"usePost": True}}
    changed = await ui.api("PUT", f"{OBJECTS}/{export_id}", json={"value": value})  # another tab
    assert changed.status_code == 200, changed.text
    await ui.logged_in()
    sent = await ui.post(
        f"/ui/exports/{export_id}/delete", {"csrf": await ui.csrf(), "updateToken": read["updateToken"]}
    )
    said = (await ui.follow(sent)).flash
    assert said is not None and said.startswith("Not deleted: the export was changed meanwhile"), said
    assert [o["objectId"] for o in await ui.objects()] == [export_id]


@pytest.mark.parametrize("number", ["99999999999999999999999", "9223372036854775808", "²", "-1", "1e3"])
async def test_ids_out_of_reach_are_not_found_rather_than_errors(ui: Browser, number: str) -> None:
    export_id = await ui.create(export_value(ENDPOINT))
    await ui.logged_in()
    listed = await ui.get("/ui/sessions", before=number)
    assert listed.status == 200
    replay = await ui.post(f"/ui/health/{export_id}/replay", {"csrf": await ui.csrf(), "letter": number})
    assert (await ui.follow(replay)).flash == (
        "Nothing to replay: the dead letter was replayed already, or there is none pending."
    )
    if number.isascii() and number.isdigit():
        assert (await ui.get(f"/ui/sessions/{number}")).status == 404
