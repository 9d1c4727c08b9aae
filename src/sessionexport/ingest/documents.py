"""Request bodies to session-log records: NDJSON lines or a JSON array, validated all at once.

A body is accepted whole or refused whole; a refusal lists every problem of every document with
its place (``line N`` of NDJSON, ``index N`` of an array) and field path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from sessionexport.media_types import JSON, NDJSON, media_type
from sessionexport.model.session import UserSession
from sessionexport.model.validation import NOT_JSON, InvalidSession, decode_session, not_json, single_line
from sessionexport.store.records import NewSession

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DocumentProblem:
    location: str  # "line 3", "index 2", or "body"
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.location}, {self.path}" if self.path else self.location
        return f"{where}: {self.message}"


MAX_PROBLEMS = 100  # listed in an answer, the rest counted: a wrong file would get an answer 50x its size


class Problems:
    """The problems of a body: the first ``MAX_PROBLEMS`` kept, every one counted."""

    def __init__(self) -> None:
        self.listed: list[DocumentProblem] = []
        self.count = 0

    def add(self, problem: DocumentProblem) -> None:
        self.count += 1
        if len(self.listed) < MAX_PROBLEMS:
            self.listed.append(problem)

    def raise_any(self) -> None:
        if self.count:
            raise RejectedBody(self.listed, self.count)


class RejectedBody(ValueError):
    def __init__(self, problems: list[DocumentProblem], count: int | None = None) -> None:
        self.problems = problems  # the first ones
        self.count = len(problems) if count is None else count  # all of them
        super().__init__(f"{self.count} problem(s), first: {problems[0]}")

    def summary(self, outcome: str) -> str:
        """``N problem(s) in the request body; <outcome>``, saying when not all are listed."""
        listed = f" (the first {len(self.problems)} listed)" if self.count > len(self.problems) else ""
        return f"{self.count} problem(s) in the request body{listed}; {outcome}"


UTF8_BOM = b"\xef\xbb\xbf"  # Windows tools start UTF-8 files with it; RFC 8259 lets a reader ignore it


def ndjson_lines(body: bytes) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every non-blank line; ``\\r\\n`` endings and a leading byte order
    mark tolerated."""
    for number, line in enumerate(body.removeprefix(UTF8_BOM).split(b"\n"), start=1):
        if line[:1].isspace() or line[-1:].isspace():  # strip() copies: only when there is a need
            line = line.strip()
        if line:
            yield number, line


def parse_ndjson(body: bytes) -> list[NewSession]:
    return parse_all(((f"line {n}", line) for n, line in ndjson_lines(body)), _record)


def parse_json_array(body: bytes) -> list[NewSession]:
    return parse_all(array_items(body), _record)


def array_items(body: bytes) -> list[tuple[str, bytes]]:
    """(``index N``, item) for every item of a JSON array body."""
    try:
        items = msgspec.json.decode(body.removeprefix(UTF8_BOM), type=list[msgspec.Raw])
    except msgspec.ValidationError:
        raise RejectedBody([DocumentProblem("body", "", "expected a JSON array of sessions")]) from None
    except NOT_JSON as exc:
        raise RejectedBody([DocumentProblem("body", "", not_json(body, exc).message)]) from None
    return [(f"index {i}", bytes(item)) for i, item in enumerate(items)]


def parse_body(body: bytes, content_type: str) -> list[NewSession]:
    return body_parser(content_type)(body)


def body_parser(content_type: str) -> Callable[[bytes], list[NewSession]]:
    """The parser of a body of this media type (parameters such as ``charset`` ignored), or
    UnsupportedMediaType: known before the body is read."""
    media = media_type(content_type)
    if media == NDJSON:
        return parse_ndjson
    if media == JSON:
        return parse_json_array
    raise UnsupportedMediaType(media)


class UnsupportedMediaType(ValueError):
    def __init__(self, media: str) -> None:
        super().__init__(f"unsupported content type {media or '(none)'!r}: use {NDJSON} or {JSON}")


def parse_all(documents: Iterable[tuple[str, bytes]], parse: Callable[[bytes], T]) -> list[T]:
    """Every document parsed, or RejectedBody with the problems of the documents (``parse``
    raises InvalidSession) and their places; an empty body is refused too."""
    parsed: list[T] = []
    problems = Problems()
    for location, raw in documents:
        try:
            parsed.append(parse(raw))
        except InvalidSession as exc:
            for p in exc.problems:
                problems.add(DocumentProblem(location, p.path, p.message))
    problems.raise_any()
    if not parsed:
        raise RejectedBody([DocumentProblem("body", "", "no sessions in the request body")])
    return parsed


def _record(raw: bytes) -> NewSession:
    return to_record(decode_session(raw), raw)


def to_record(session: UserSession, raw: bytes) -> NewSession:
    """The log record of a decoded session; ``raw`` is stored as sent, on one line."""
    return NewSession(
        tenant_id=session.tenantId,
        user_session_id=session.userSessionId,
        start_time=session.startTime,
        end_time=session.endTime,
        user_id=session.userId,
        user_type=session.userType.value if session.userType else None,
        application_type=session.applicationType.value if session.applicationType else None,
        country=session.country or session.geolocationCountryName,
        applications=_applications(session),
        body=single_line(raw),
    )


def _applications(session: UserSession) -> tuple[str, ...]:
    """Names and ids of the applications of the session's user actions (for management zones)."""
    names: set[str] = set()
    for action in session.userActions or ():
        if action.application:
            names.add(action.application)
        if action.internalApplicationId:
            names.add(action.internalApplicationId)
    return tuple(sorted(names))
