"""The web UI in a real browser: Debian's headless Chromium driven by Playwright, against the real
app (uvicorn on loopback, SQLite, exporters running) and a real HTTPS receiver with a test CA and
an OAuth2 token endpoint.

Every page visited is saved as a screenshot under ``artifacts/ui-screenshots/`` (or the folder in
``SESSIONEXPORT_SCREENSHOTS``), at laptop and at phone width.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from sessionexport.api.app import create_app
from sessionexport.config import ServerConfig
from sessionexport.generate.sessions import generate_lines
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.store import create_store
from tests.conftest import ALL_SCOPES, make_token
from tests.support.receiver import Receiver, Tls
from tests.support.threaded_server import ThreadedServer

SCREENSHOTS = Path(
    os.environ.get("SESSIONEXPORT_SCREENSHOTS", Path(__file__).parents[2] / "artifacts" / "ui-screenshots")
)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = ViewportSize(width=1280, height=860)
PHONE = ViewportSize(width=390, height=844)
CLIENT_ID, CLIENT_SECRET = "ui-exporter", "ui-client-secret"


@dataclass
class Site:
    base: str
    token: str
    receiver: Receiver

    def ingest(self, count: int, seed: int) -> None:
        self.ingest_lines(list(generate_lines(count, seed)))

    def create_export(self, url: str) -> None:
        export = {"endpointDefinition": {"endpointUrl": url}}
        created = httpx.post(
            f"{self.base}/api/v2/settings/objects",
            json=[{"schemaId": EXPORT_SCHEMA, "scope": "environment", "value": export}],
            headers={"Authorization": f"Api-Token {self.token}"},
        )
        assert created.status_code == 200, created.text

    def ingest_lines(self, lines: list[bytes]) -> None:
        body = b"\n".join(lines)
        response = httpx.post(
            f"{self.base}/api/v2/usersessions",
            content=body,
            headers={"Authorization": f"Api-Token {self.token}", "Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 200, response.text


def chromium_path() -> str:
    path = os.environ.get("SESSIONEXPORT_CHROMIUM") or shutil.which("chromium")
    assert path, (
        "Chromium is needed for the UI tests: apt-get install chromium (or set SESSIONEXPORT_CHROMIUM)"
    )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    tls = Tls.create(tmp_path)
    receiver = Receiver(tls).start()
    receiver.behaviour.oauth_clients = {CLIENT_ID: CLIENT_SECRET}
    config = ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file)
    # Playwright's sync API keeps an event loop running in this thread: the store is opened in another.
    with ThreadPoolExecutor(1) as thread:
        token = thread.submit(asyncio.run, _token(config)).result()
    server = ThreadedServer(create_app(config), lifespan="on").start()
    try:
        yield Site(f"http://127.0.0.1:{server.port}", token, receiver)
    finally:
        server.stop()
        receiver.stop()


async def _token(config: ServerConfig) -> str:
    store = create_store(config.data_dir)
    await store.open()
    try:
        return await make_token(store, ALL_SCOPES, name="operator")
    finally:
        await store.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/ui/exports")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("API token").fill(site.token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/ui/exports$"))


def test_configure_an_oauth2_export_test_it_watch_it_deliver_and_replay_a_dead_letter(
    browser: Browser, site: Site
) -> None:
    page = browser.new_page(viewport=LAPTOP, accept_downloads=True)
    site.ingest(30, seed=7)  # the test export and the sample need sessions of the last 7 days

    # Log in: a wrong token is refused on the page, the right one opens the exports.
    page.goto(f"{site.base}/ui/exports")
    shot(page, "01-login")
    page.get_by_label("API token").fill("se0c01.NOTATOKEN")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#token-error")).to_contain_text("not valid")
    page.get_by_label("API token").fill(site.token)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="User session exports")).to_be_visible()
    expect(page.get_by_text("No exports yet")).to_be_visible()
    shot(page, "02-exports-empty")

    # A new export with OAuth2: the OAuth2 fields appear only once authentication is on.
    form = page.locator("#export-new")
    form.locator("summary").click()
    oauth = form.locator("#export-new-authentication-oAuth2")
    expect(oauth).to_be_hidden()
    form.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/export/events")
    form.get_by_label("Activate").first.check()
    form.get_by_label("Authentication type").select_option("oauth2")
    expect(oauth).to_be_visible()
    expect(form.get_by_label("Client ID")).to_have_attribute("aria-required", "true")  # shown: required
    expect(form.get_by_label("User name")).not_to_have_attribute("aria-required", "true")
    expect(form.locator("#export-new-authentication-basicAuth")).to_be_hidden()
    form.get_by_label("Access token URL").fill(site.receiver.token_url)
    form.get_by_label("Client ID").fill(CLIENT_ID)
    form.get_by_label("Client secret").fill(CLIENT_SECRET)
    form.get_by_label("Custom configuration properties").fill('{"flushIntervalSeconds": 1, "retries": 0}')

    # The http refusal: the test export is off with the reason beside it, and saving is refused
    # with the API's violation next to the field.
    test_button = form.get_by_role("button", name="Test export")
    expect(test_button).to_be_disabled()
    expect(form.locator("[data-http-hint]")).to_be_visible()
    shot(page, "03-export-http-refused")
    form.get_by_role("button", name="Add export").click()
    expect(page.locator("#export-new-endpointDefinition-endpointUrl-error")).to_contain_text("https")
    shot(page, "04-export-violation")

    # Back to HTTPS: the test export sends once through the OAuth2 flow and reports inline.
    form = page.locator("#export-new")
    form.get_by_label("Endpoint URL").fill(site.receiver.url)
    form.get_by_label("Client secret").fill(CLIENT_SECRET)  # secrets are never sent back to the page
    expect(test_button).to_be_enabled()
    form.get_by_role("button", name="Test export").click()
    expect(form.locator(".test-result")).to_contain_text("Test export succeeded", timeout=15_000)
    expect(form.locator(".test-result")).to_contain_text("HTTP 200")
    assert site.receiver.token_requests[-1]["client_id"] == CLIENT_ID
    tested = len(site.receiver.sessions())
    assert 0 < tested <= 30
    shot(page, "05-test-export-result")

    # Downloads: sample data in the export's format, and the Elasticsearch mapping.
    with page.expect_download() as sample:
        form.get_by_role("button", name="Download sample export data").click()
    lines = Path(sample.value.path()).read_bytes().splitlines()
    assert len(lines) == tested and all(orjson.loads(line)["userSessionId"] for line in lines)
    with page.expect_download() as mapping:
        form.get_by_role("button", name="Download mapping").click()
    document = orjson.loads(Path(mapping.value.path()).read_bytes())
    assert document["mappings"]["properties"]["userActions"]["type"] in ("object", "nested")

    # Save it. The page lists it as enabled.
    form.get_by_label("Client secret").fill(CLIENT_SECRET)
    form.get_by_role("button", name="Add export").click()
    expect(page.locator(".flash")).to_contain_text("Export added")
    card = page.locator("details.card", has_text=site.receiver.url).first
    expect(card.locator(".badge")).to_have_text("enabled")
    shot(page, "06-export-saved")

    # The first bulk fails (a dead letter: no retries configured), the next ones are delivered.
    site.receiver.behaviour.script.append(500)
    site.ingest(5, seed=11)
    page.goto(f"{site.base}/ui/health")
    delivered = page.locator("[data-delivered]").first
    expect(page.locator("[data-dead-letters]").first).to_have_text("1", timeout=20_000)
    site.ingest(40, seed=12)
    # The counts refresh in place (no reload) as the exporter delivers.
    expect(delivered).to_have_text("40", timeout=20_000)
    page.reload()
    expect(page.get_by_role("button", name=re.compile("Replay dead letter"))).to_have_count(1)
    expect(page.locator(".chart canvas").first).to_be_visible()
    shot(page, "07-health-with-dead-letter")

    # Replay: sent again, delivered, and gone from the pending list.
    before = len(site.receiver.sessions())
    page.get_by_role("button", name=re.compile("Replay dead letter")).click()
    expect(page.locator(".flash")).to_contain_text("Replayed 1 of 1 dead letter(s)")
    # where the button was, not at the page's top, and read out first
    expect(page.locator(".flash")).to_be_in_viewport()
    expect(page.locator(".flash")).to_be_focused()
    expect(page.get_by_text("No dead letters")).to_be_visible()
    assert len(site.receiver.sessions()) == before + 5
    shot(page, "08-health-after-replay")

    # Log out: the UI asks for a token again.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    expect(page.locator(".flash")).to_have_text("Logged out.")
    expect(page.get_by_label("API token")).to_be_focused()  # the message takes no focus from it
    page.goto(f"{site.base}/ui/health")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/health"))
    page.close()


def test_zones_and_sessions_pages(browser: Browser, site: Site) -> None:
    page = browser.new_page(viewport=LAPTOP)
    site.ingest(60, seed=3)
    log_in(page, site)

    page.get_by_role("link", name="Management zones").click()
    expect(page.get_by_text("No management zones yet")).to_be_visible()
    form = page.locator("#zone-new")
    form.get_by_label("Name").fill("Web shop")
    form.get_by_label("Attribute").select_option("APPLICATION_TYPE")
    form.get_by_label("Value").fill("WEB_APPLICATION")
    form.get_by_role("button", name="Add another rule").click()
    second = form.locator("[data-blank-item] > fieldset").nth(1)
    second.get_by_label("Attribute").select_option("COUNTRY")
    second.get_by_label("Value").fill("Atlantis")
    form.get_by_role("button", name="Add zone").click()
    expect(page.locator(".flash")).to_contain_text("Web shop")
    matches = page.locator("[data-matches]")
    expect(matches).to_have_text(re.compile(r"[1-9]\d* recent session"))
    shot(page, "09-zones")

    page.get_by_role("link", name="Sessions").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(50)  # one page; older ones behind "Older sessions"
    expect(page.get_by_role("link", name="Older sessions")).to_be_visible()
    shot(page, "10-sessions")
    first_id = rows.first.locator("td").nth(1).inner_text()
    page.get_by_label("Value").fill(first_id)
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    page.get_by_role("link", name=first_id).click()
    expect(page.get_by_role("heading", name=re.compile("User actions"))).to_be_visible()
    assert page.locator("tbody tr").count() >= 1
    raw = orjson.loads(page.locator("pre.json").inner_text())
    assert raw["userSessionId"] == first_id
    shot(page, "11-session")
    page.close()


def test_every_page_fits_a_phone_and_works_from_the_keyboard(browser: Browser, site: Site) -> None:
    site.ingest(10, seed=5)
    # long values wrap instead of widening the page: a user id, an endpoint URL
    long_user = orjson.loads(next(generate_lines(1, seed=6))) | {"userId": "u" * 512}  # the longest allowed
    site.ingest_lines([orjson.dumps(long_user)])
    site.create_export("https://collector.example/" + "segment/" * 40)
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{site.base}/ui/login")
    # Keyboard only: the token field has the focus, Enter logs in, and the message saying so has
    # the focus (it is read out first). On a page without one, the first Tab reaches "Skip to
    # content", which takes the focus past the navigation.
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.type(site.token)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/exports$"))
    expect(page.locator(".flash")).to_be_focused()
    page.reload()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for name in ("exports", "zones", "health", "sessions"):
        page.goto(f"{site.base}/ui/{name}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"/ui/{name} is {overflow}px wider than a phone screen"
        # a wide table scrolls in its box; one long value must not make it many screens wide
        widest = page.evaluate(
            "Math.max(0, ...[...document.querySelectorAll('table')].map(t => t.offsetWidth))"
        )
        assert widest <= 3 * PHONE["width"], f"a table of /ui/{name} is {widest}px wide"
        shot(page, f"phone-{name}")
    page.close()


# The words broken across lines in the cells that are not a sender's free text: none may shrink
# below its longest word for a long value in another column.
BROKEN_WORDS = """
[...document.querySelectorAll('tbody td:not(.text)')].flatMap(td => {
  const broken = [];
  const walker = document.createTreeWalker(td, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const word of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      if (new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1) broken.push(word[0]);
    }
  }
  return broken;
})
"""


def test_a_long_value_wraps_in_its_own_cell_and_breaks_no_other(browser: Browser, site: Site) -> None:
    site.ingest(5, seed=7)
    long_user = orjson.loads(next(generate_lines(1, seed=8))) | {"userId": "u" * 512}
    site.ingest_lines([orjson.dumps(long_user)])
    page = browser.new_page(viewport=LAPTOP)
    log_in(page, site)
    page.goto(f"{site.base}/ui/sessions")
    expect(page.locator("tbody tr")).to_have_count(6)
    assert page.evaluate(BROKEN_WORDS) == []
    box = page.locator("td.text", has_text="uuuu").bounding_box()
    assert box is not None and box["width"] < 400  # it wraps in its own cell
    shot(page, "12-long-value")
    page.close()


def test_the_health_page_shows_utc_and_goes_to_the_login_once_it_ended_elsewhere(
    browser: Browser, site: Site
) -> None:
    site.create_export("https://127.0.0.1:9/sessions")
    # a browser in New York: every time on the page is UTC all the same, the chart's too
    context = browser.new_context(viewport=LAPTOP, timezone_id="America/New_York")
    page = context.new_page()
    log_in(page, site)
    page.goto(f"{site.base}/ui/health")
    chart = page.locator(".chart .u-over")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] - 5, box["y"] + box["height"] / 2)  # the latest minute
    shown = page.locator(".u-legend .u-series").first.locator(".u-value").inner_text()
    utc = datetime.now(UTC)
    minutes = {f"{utc - timedelta(minutes=m):%Y-%m-%d %H:%M} UTC" for m in (0, 1, 2)}
    assert shown in minutes, (shown, minutes)  # as every other time on the page: 24-hour, UTC

    # logged out in another tab: the page's next refresh takes it to the login, which leads back
    other = context.new_page()
    other.goto(f"{site.base}/ui/exports")
    other.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/health$"), timeout=15_000)
    expect(page.locator(".top nav")).to_have_count(0)  # a whole login page, not one inside a card
    context.close()


def test_without_javascript_nothing_that_needs_it_is_offered(browser: Browser, site: Site) -> None:
    site.create_export("https://127.0.0.1:9/sessions")
    context = browser.new_context(viewport=LAPTOP, java_script_enabled=False)
    page = context.new_page()
    log_in(page, site)
    page.locator("#export-new summary").click()
    expect(page.get_by_role("button", name="Download mapping").first).to_be_visible()
    expect(page.get_by_role("button", name="Test export")).to_have_count(0)  # it goes through htmx
    page.goto(f"{site.base}/ui/health")
    expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    expect(page.get_by_role("img")).to_have_count(0)  # no empty box said to be a chart
    context.close()


def test_a_refused_test_export_says_why_in_place(browser: Browser, site: Site) -> None:
    """A page's script request refused (here its form expired: the login was renewed in another
    tab) shows the reason where its result would have gone, not nothing (htmx leaves 4xx
    unswapped by itself)."""
    site.ingest(3, seed=8)
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    log_in(page, site)
    form = page.locator("#export-new")
    form.locator("summary").click()
    form.get_by_label("Endpoint URL").fill(site.receiver.url)
    other = context.new_page()  # logged out and in again: a new CSRF token
    other.goto(f"{site.base}/ui/exports")
    other.get_by_role("button", name="Log out").click()
    log_in(other, site)
    form.get_by_role("button", name="Test export").click()
    expect(form.locator("[role=alert]")).to_contain_text("Form expired")
    assert site.receiver.requests == []  # nothing was sent
    context.close()
