"""The UI's login session: a signed cookie, a CSRF token, and the API token it stands for.

Logging in checks an API token once; the cookie then holds the token's public id (never the token),
a random session id and a random CSRF token, signed with a key derived from the secret keys, so
every process sharing those keys accepts it. Each request looks the token up again: revoking it
ends its UI sessions. Logging out ends the session in the store too: a copy of its cookie taken
before is refused from then on. A login lasts 8 hours from when it began, however often its
cookie is signed again.
The cookie is ``HttpOnly``, ``SameSite=Lax``, and ``Secure`` when the request came over HTTPS;
every form carries the CSRF token and every state-changing request must send it back.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "sessionexport_ui"
MAX_AGE_SECONDS = 8 * 3600


@dataclass
class UiSession:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token_id: str | None = None
    flash: str | None = None
    flash_at: str | None = None  # the id of the part of the next page it is about (its anchor)
    id: str | None = None  # of a logged-in session
    since: int | None = None  # when it logged in, epoch seconds: it ends MAX_AGE_SECONDS later
    changed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "c": self.csrf,
            "t": self.token_id,
            "f": self.flash,
            "a": self.flash_at,
            "s": self.id,
            "l": self.since,
        }

    def csrf_ok(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())

    def log_in(self, token_id: str) -> None:
        # A new CSRF token at every login and logout: one known before is worth nothing after.
        self.token_id, self.csrf, self.changed = token_id, secrets.token_urlsafe(32), True
        self.id, self.since = secrets.token_urlsafe(24), int(time.time())

    def log_out(self) -> None:
        self.token_id, self.id, self.since = None, None, None
        self.csrf, self.changed = secrets.token_urlsafe(32), True

    def say(self, message: str, *, at: str | None = None) -> None:
        """A message for the next page, shown at its top, or ``at`` the part of it with that id
        when the page has one (the part a redirect to ``#at`` scrolls to)."""
        self.flash, self.flash_at, self.changed = message, at, True

    def take_flash(self) -> tuple[str | None, str | None]:
        """The message for this page and where it belongs (None: at the top); said once."""
        message, at = self.flash, self.flash_at
        self.flash = self.flash_at = None
        self.changed = self.changed or message is not None
        return message, at


def _younger_than_max_age(since: Any) -> bool:
    return isinstance(since, int) and time.time() - since < MAX_AGE_SECONDS


class SessionCookies:
    def __init__(self, key: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="sessionexport-ui")

    def load(self, request: Request) -> UiSession:
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=MAX_AGE_SECONDS)
                session = UiSession(
                    csrf=data["c"],
                    token_id=data["t"],
                    flash=data["f"],
                    flash_at=data.get("a"),
                    id=data.get("s"),
                )
                session.since = data.get("l")
            except (BadSignature, KeyError, TypeError):
                return UiSession(changed=True)  # tampered, expired or from other keys: start afresh
            # A cookie is signed again whenever the session changes (a message shown, say): the
            # login ends 8 hours after it began all the same.
            if session.token_id is not None and not _younger_than_max_age(session.since):
                session.log_out()
            return session
        return UiSession(changed=True)

    def save(self, request: Request, response: Response, session: UiSession) -> None:
        if not session.changed:
            return
        response.set_cookie(
            COOKIE,
            self._serializer.dumps(session.as_json()),
            max_age=MAX_AGE_SECONDS,
            path="/ui",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/ui")
