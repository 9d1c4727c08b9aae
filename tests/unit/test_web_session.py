"""The UI's login session: the signed cookie and its CSRF token (no I/O: requests and responses are
built in memory)."""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable
from http.cookies import SimpleCookie

import itsdangerous
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from sessionexport import tokens
from sessionexport.web.session import COOKIE, MAX_AGE_SECONDS, SessionCookies, UiSession

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TOKEN_ID = "PUBLICID0123456789ABCDEF"  # a token's public id


def request(cookie: str | None = None, scheme: str = "http") -> Request:
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie is not None else []
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": scheme,
            "server": ("sessionexport.test", 443 if scheme == "https" else 80),
            "path": "/ui/exports",
            "root_path": "",
            "query_string": b"",
            "headers": headers,
        }
    )


def set_cookie(response: Response) -> SimpleCookie | None:
    headers = [value for name, value in response.headers.items() if name == "set-cookie"]
    if not headers:
        return None
    [header] = headers
    parsed = SimpleCookie()
    parsed.load(header)
    return parsed


def saved(cookies: SessionCookies, session: UiSession, scheme: str = "http") -> str:
    """The cookie value a response carries for ``session``."""
    response = Response()
    cookies.save(request(scheme=scheme), response, session)
    parsed = set_cookie(response)
    assert parsed is not None and COOKIE in parsed, response.headers
    return parsed[COOKIE].value


def payload(cookie: str) -> bytes:
    """What the cookie carries, decoded without its key (what anyone holding it can read)."""
    data = cookie.split(".")[0] if not cookie.startswith(".") else cookie[1:].split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return zlib.decompress(raw) if cookie.startswith(".") else raw


def logged_in(token_id: str = TOKEN_ID) -> UiSession:
    session = UiSession()
    session.log_in(token_id)
    return session


# -- the cookie ------------------------------------------------------------------------------------


def test_a_session_survives_the_round_trip() -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    session.say("Export saved.")
    loaded = cookies.load(request(saved(cookies, session)))
    assert (loaded.token_id, loaded.csrf, loaded.flash) == (session.token_id, session.csrf, "Export saved.")
    assert loaded.changed is False  # nothing to send back


def test_an_unchanged_session_sets_no_cookie() -> None:
    cookies = SessionCookies(KEY)
    loaded = cookies.load(request(saved(cookies, logged_in())))
    response = Response()
    cookies.save(request(), response, loaded)
    assert set_cookie(response) is None


def test_the_cookie_is_httponly_samesite_lax_and_limited_to_the_ui() -> None:
    cookies = SessionCookies(KEY)
    response = Response()
    cookies.save(request(), response, logged_in())
    parsed = set_cookie(response)
    assert parsed is not None
    morsel = parsed[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/ui"
    assert int(morsel["max-age"]) == MAX_AGE_SECONDS
    assert not morsel["secure"]  # plain http (a local server): a Secure cookie would never come back

    over_https = Response()
    cookies.save(request(scheme="https"), over_https, logged_in())
    secure = set_cookie(over_https)
    assert secure is not None and secure[COOKIE]["secure"] is True


def test_no_cookie_gives_a_fresh_anonymous_session() -> None:
    first = SessionCookies(KEY).load(request())
    second = SessionCookies(KEY).load(request())
    assert first.token_id is None and first.changed is True  # so that its CSRF token gets a cookie
    assert first.csrf != second.csrf and len(first.csrf) >= 32


def tamper(cookie: str) -> str:
    position = len(cookie) // 3
    replacement = "A" if cookie[position] != "A" else "B"
    return cookie[:position] + replacement + cookie[position + 1 :]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(tamper, id="tampered"),
        pytest.param(lambda c: c + "x", id="signature-changed"),
        pytest.param(lambda c: c.rsplit(".", 1)[0], id="signature-cut-off"),
        pytest.param(lambda c: "garbage", id="not-a-cookie-of-ours"),
        pytest.param(lambda c: "", id="empty"),
    ],
)
def test_a_spoiled_cookie_gives_a_fresh_anonymous_session(spoil: Callable[[str], str]) -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    cookie = saved(cookies, session)
    loaded = cookies.load(request(spoil(cookie)))
    assert loaded.token_id is None
    assert loaded.csrf != session.csrf
    assert loaded.changed is True


def test_a_cookie_signed_with_another_key_gives_a_fresh_anonymous_session() -> None:
    session = logged_in()
    cookie = saved(SessionCookies(OTHER_KEY), session)
    loaded = SessionCookies(KEY).load(request(cookie))
    assert loaded.token_id is None and loaded.csrf != session.csrf


def test_a_forged_payload_with_a_valid_looking_shape_is_refused() -> None:
    """Someone who can read their own cookie cannot write another token id into it."""
    cookies = SessionCookies(KEY)
    cookie = saved(cookies, logged_in("A" * 24))
    forged_payload = base64.urlsafe_b64encode(orjson.dumps({"c": "x", "t": "B" * 24, "f": None})).rstrip(b"=")
    forged = ".".join([forged_payload.decode(), *cookie.split(".")[-2:]])
    assert cookies.load(request(forged)).token_id is None


def test_a_cookie_expires_after_the_maximum_age(monkeypatch: pytest.MonkeyPatch) -> None:
    cookies = SessionCookies(KEY)
    now = int(itsdangerous.timed.TimestampSigner(KEY).get_timestamp())

    def signed_at(when: int) -> str:
        with monkeypatch.context() as patch:
            patch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: when)
            return saved(cookies, logged_in())

    young = cookies.load(request(signed_at(now - MAX_AGE_SECONDS + 60)))
    assert young.token_id is not None
    old = cookies.load(request(signed_at(now - MAX_AGE_SECONDS - 60)))
    assert old.token_id is None and old.changed is True


def test_a_login_ends_8_hours_after_it_began_however_often_its_cookie_is_signed_again() -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    assert session.since is not None
    session.since -= MAX_AGE_SECONDS - 60  # logged in almost 8 hours ago
    session.say("a message: the cookie is signed again now")
    still = cookies.load(request(saved(cookies, session)))
    assert still.token_id == TOKEN_ID and still.id == session.id
    session.since -= 120  # and now over 8 hours ago, in a freshly signed cookie
    ended = cookies.load(request(saved(cookies, session)))
    assert ended.token_id is None and ended.id is None and ended.changed is True


def test_a_login_cookie_without_its_start_is_refused() -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    session.since = None  # as a cookie signed before logins had a start: logged out, not forever
    assert cookies.load(request(saved(cookies, session))).token_id is None


def test_the_cookie_never_holds_the_api_token() -> None:
    new = tokens.new_token("ui", frozenset({"settings.read"}), 1_700_000_000_000)
    session = UiSession()
    session.log_in(new.record.id)
    cookie = saved(SessionCookies(KEY), session)
    secret_part = new.token.split(".")[2]
    readable = payload(cookie).decode()
    assert new.record.id in readable  # only the public id, to look the token up again
    assert new.token not in readable and secret_part not in readable
    assert secret_part not in cookie and new.token not in cookie


# -- CSRF ------------------------------------------------------------------------------------------


def test_csrf_ok_accepts_only_the_sessions_token() -> None:
    session = UiSession()
    assert session.csrf_ok(session.csrf)
    for wrong in (None, "", "x", session.csrf[:-1], session.csrf + "x", " " + session.csrf):
        assert not session.csrf_ok(wrong), wrong
    assert not session.csrf_ok(UiSession().csrf)  # another session's token
    assert not session.csrf_ok("é" * 10)  # non-ASCII input is refused, not an error


def test_log_in_and_log_out_rotate_the_csrf_token() -> None:
    session = UiSession()
    before = session.csrf
    session.log_in(TOKEN_ID)
    assert session.token_id == TOKEN_ID and session.changed
    assert session.csrf != before and not session.csrf_ok(before)
    during = session.csrf
    session.changed = False
    session.log_out()
    assert session.token_id is None and session.changed
    assert session.csrf not in (before, during) and not session.csrf_ok(during)


def test_a_flash_message_is_shown_once() -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    session.say("Export deleted.")
    loaded = cookies.load(request(saved(cookies, session)))
    assert loaded.take_flash() == ("Export deleted.", None)
    assert loaded.changed  # the cookie must be rewritten without the message
    again = cookies.load(request(saved(cookies, loaded)))
    assert again.take_flash() == (None, None)


def test_a_flash_message_keeps_the_part_of_the_page_it_is_about() -> None:
    cookies = SessionCookies(KEY)
    session = logged_in()
    session.say("Replayed 1 of 1 dead letter(s).", at="health-abc")
    loaded = cookies.load(request(saved(cookies, session)))
    assert loaded.take_flash() == ("Replayed 1 of 1 dead letter(s).", "health-abc")
    assert cookies.load(request(saved(cookies, loaded))).take_flash() == (None, None)
