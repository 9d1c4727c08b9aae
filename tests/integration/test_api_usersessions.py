"""``/api/v2/usersessions`` through the real app and a real SQLite store."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import msgspec
import orjson
import pytest

from sessionexport.api import usersessions
from sessionexport.clock import now_ms
from sessionexport.generate.sessions import GeneratorOptions, generate_lines
from sessionexport.tokens import new_token
from tests.conftest import Api, sample

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

NDJSON = {"Content-Type": "application/x-ndjson"}
MOBILE, WEB = "doc-mobile-session.json", "doc-web-synthetic-session.json"


def lines(count: int, seed: int = 1) -> list[bytes]:
    return list(generate_lines(count, seed, GeneratorOptions(end_ms=1_760_000_000_000)))


async def post(api: Api, body: bytes, token: str, content_type: str = "application/x-ndjson"):  # type: ignore[no-untyped-def]
    return await api.client.post(
        "/api/v2/usersessions", content=body, headers={**api.auth(token), "Content-Type": content_type}
    )


async def all_sessions(api: Api, token: str) -> list[dict[str, object]]:
    response = await api.client.get("/api/v2/usersessions", params={"pageSize": 500}, headers=api.auth(token))
    assert response.status_code == 200
    return response.json()["userSessions"]  # type: ignore[no-any-return]


async def test_ndjson_ingest_then_list(api: Api) -> None:
    token = await api.token()
    body = b"\n".join(lines(5)) + b"\n"
    response = await post(api, body, token)
    assert response.status_code == 200
    assert response.json() == {"accepted": 5, "duplicates": 0}
    listed = await all_sessions(api, token)
    assert [s["userSessionId"] for s in listed] == [
        json.loads(x)["userSessionId"] for x in reversed(lines(5))
    ]


async def test_json_array_ingest_and_duplicates_counted(api: Api) -> None:
    token = await api.token()
    docs = lines(4)
    array = b"[" + b",".join(docs) + b"]"
    assert (await post(api, array, token, "application/json; charset=utf-8")).json() == {
        "accepted": 4,
        "duplicates": 0,
    }
    again = await post(api, b"\n".join(docs[:2] + lines(1, seed=5)), token)
    assert again.json() == {"accepted": 1, "duplicates": 2}
    assert len(await all_sessions(api, token)) == 5


async def test_doc_samples_come_back_byte_identical(api: Api) -> None:
    token = await api.token()
    mobile, web = sample(MOBILE), sample(WEB)
    # one pretty-printed, to show the stored form is the compact one
    pretty_web = msgspec.json.format(web, indent=2)
    assert (
        await post(api, b"[" + mobile + b"," + pretty_web + b"]", token, "application/json")
    ).status_code == 200
    for raw in (mobile, web):
        session_id = json.loads(raw)["userSessionId"]
        response = await api.client.get(
            "/api/v2/usersessions", params={"userSessionId": session_id}, headers=api.auth(token)
        )
        body = response.content
        start = body.index(b"[") + 1
        assert body[start : start + len(raw)] == raw
        assert body[start + len(raw) : start + len(raw) + 1] == b"]"


async def test_paging_with_next_page_key_alone(api: Api) -> None:
    token = await api.token()
    await post(api, b"\n".join(lines(7)), token)
    seen: list[str] = []
    response = await api.client.get("/api/v2/usersessions", params={"pageSize": 3}, headers=api.auth(token))
    while True:
        page = response.json()
        seen += [s["userSessionId"] for s in page["userSessions"]]
        assert page["pageSize"] == len(page["userSessions"])
        if page["nextPageKey"] is None:
            break
        response = await api.client.get(
            "/api/v2/usersessions", params={"nextPageKey": page["nextPageKey"]}, headers=api.auth(token)
        )
    assert len(seen) == 7 and len(set(seen)) == 7


async def test_a_page_stops_at_its_byte_limit_and_paging_still_yields_every_session(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions may be megabytes each: a page of 500 would be gigabytes, held whole to be sent."""
    token = await api.token()
    docs = lines(7)
    await post(api, b"\n".join(docs), token)
    monkeypatch.setattr(usersessions, "PAGE_BYTES", 2 * max(len(d) for d in docs))  # two or three a page
    seen: list[bytes] = []
    sizes: list[int] = []
    params: dict[str, str | int] = {"pageSize": 500}
    while True:
        page = (await api.client.get("/api/v2/usersessions", params=params, headers=api.auth(token))).json()
        seen += [orjson.dumps(s) for s in page["userSessions"]]
        sizes.append(page["pageSize"])
        if page["nextPageKey"] is None:
            break
        params = {"nextPageKey": page["nextPageKey"]}
    assert sorted(seen) == sorted(docs)  # each once
    assert all(2 <= n <= 3 for n in sizes[:-1]) and sum(sizes) == 7
    monkeypatch.setattr(usersessions, "PAGE_BYTES", 1)  # each page cut after its one session
    user = orjson.loads(docs[0])["userId"]
    params, pages = {"pageSize": 500, "userId": user}, 0
    while True:
        page = (await api.client.get("/api/v2/usersessions", params=params, headers=api.auth(token))).json()
        pages += 1
        assert page["pageSize"] == 1  # none empty: the last one says there is no more
        if page["nextPageKey"] is None:
            break
        params = {"nextPageKey": page["nextPageKey"]}
    assert pages == sum(orjson.loads(d)["userId"] == user for d in docs)


async def test_a_next_page_key_with_other_parameters_is_400(api: Api) -> None:
    """As Dynatrace: the key carries the query, so a pageSize beside it is refused, not ignored."""
    token = await api.token()
    await post(api, b"\n".join(lines(3)), token)
    first = await api.client.get("/api/v2/usersessions", params={"pageSize": 1}, headers=api.auth(token))
    params = {"nextPageKey": first.json()["nextPageKey"], "pageSize": 5, "userId": "x"}
    response = await api.client.get("/api/v2/usersessions", params=params, headers=api.auth(token))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "nextPageKey must be given alone" in error["message"]
    assert [(v["path"], v["parameterLocation"]) for v in error["constraintViolations"]] == [
        ("pageSize", "QUERY"),
        ("userId", "QUERY"),
    ]


def page_key(before: int, user_session_id: str | None = None) -> str:
    """A key shaped like the server's, with a seq (and a session id) of our choosing."""
    raw = orjson.dumps({"u": user_session_id, "i": None, "p": 10, "b": before})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("key", ["garbage!", page_key(2**63), page_key(-1), page_key(7, "a\x00b")])
async def test_bad_next_page_key_is_400(api: Api, key: str) -> None:
    token = await api.token()
    response = await api.client.get(
        "/api/v2/usersessions", params={"nextPageKey": key}, headers=api.auth(token)
    )
    assert response.status_code == 400
    assert response.json()["error"]["constraintViolations"][0]["path"] == "nextPageKey"


BAD_BODIES = {
    "broken JSON line": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233}\n{"tenantId": "t",',
        NDJSON,
        2,
        "",
    ),
    "wrong type": (
        b'{"tenantId":"t","userSessionId":"1","startTime":"1622107543233"}',
        NDJSON,
        1,
        "startTime",
    ),
    "missing identity": (b'{"tenantId":"t","startTime":1622107543233}', NDJSON, 1, "userSessionId"),
    "bad enum": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"userActions":[{"type":"Tap"}]}',
        NDJSON,
        1,
        "userActions[0].type",
    ),
    "not UTF-8": (b'{"tenantId":"\xff","userSessionId":"1","startTime":1622107543233}', NDJSON, 1, ""),
    # kept as sent, it would make every page listing it invalid JSON
    "not UTF-8 in an unknown field": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233}\n'
        b'{"tenantId":"t","userSessionId":"2","startTime":1622107543233,"zzz":"a\xffb"}',
        NDJSON,
        2,
        "",
    ),
    "NUL in a kept field": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"geolocationCountryName":"A\\u0000"}',
        NDJSON,
        1,
        "geolocationCountryName",
    ),
    "ids too long for an Elasticsearch _id": (
        b'{"tenantId":"t","userSessionId":"' + "\u20ac".encode() * 200 + b'","startTime":1622107543233}',
        NDJSON,
        1,
        "userSessionId",
    ),
    "lone surrogate": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"x":"\\ud800"}',
        NDJSON,
        1,
        "",
    ),
    "nested too deeply": (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"x":'
        + b"[" * 1100
        + b"]" * 1100
        + b"}",
        NDJSON,
        1,
        "",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_each_kind_of_bad_session_is_400_with_place_and_nothing_stored(api: Api, case: str) -> None:
    token = await api.token()
    body, headers, line, path = BAD_BODIES[case]
    good = lines(2)
    response = await post(api, b"\n".join(good) + b"\n" + body, token, headers["Content-Type"])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and "nothing was stored" in error["message"]
    violation = error["constraintViolations"][0]
    assert violation["location"] == f"line {line + 2}"
    assert violation["path"] == path
    assert violation["parameterLocation"] == "PAYLOAD_BODY"
    assert await api.store.count_sessions() == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            b'[{"tenantId":"\xff","userSessionId":"1","startTime":1622107543233}]',
            "not UTF-8: byte 0xff at offset 13",
        ),
        (b"[" * 1100 + b"]" * 1100, "depth limit exceeded"),
        (b'[{"a":1,}]', "trailing comma is not allowed at column 8"),
    ],
    ids=["not-utf8", "too-deep", "trailing-comma"],
)
async def test_a_json_array_that_is_not_json_says_why_and_where(api: Api, body: bytes, says: str) -> None:
    response = await post(api, body, await api.token(), "application/json")
    assert response.status_code == 400
    [violation] = response.json()["error"]["constraintViolations"]
    assert says in violation["message"]
    assert await api.store.count_sessions() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/usersessions?userSessionId=%00",
        "/api/v2/settings/objects/ab%00cd",
        "/api/v2/exports/ab%00cd/status",
        "/ui/sessions?q=%00",
    ],
)
async def test_nul_in_a_url_is_a_bad_request(api: Api, path: str) -> None:
    """Never a real id or filter; on PostgreSQL it would otherwise come back as a storage failure."""
    response = await api.client.get(path, headers=api.auth(await api.token()))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "NUL (%00) is not allowed in a URL"


async def test_every_problem_of_every_line_is_listed(api: Api) -> None:
    token = await api.token()
    body = (
        b'{"tenantId":"t","userSessionId":"1","startTime":1622107543233,"userType":"HUMAN","bounce":"no"}\n'
        b"\n"
        b'{"userSessionId":"2","startTime":1622107543}\n'
    )
    response = await post(api, body, token)
    violations = {(v["location"], v["path"]) for v in response.json()["error"]["constraintViolations"]}
    assert violations == {
        ("line 1", "userType"),
        ("line 1", "bounce"),
        ("line 3", "tenantId"),
        ("line 3", "startTime"),
    }


@pytest.mark.parametrize("route", ["/api/v2/usersessions", "/api/v2/rum/events"])
async def test_a_body_of_thousands_of_bad_lines_lists_the_first_100_and_counts_all(
    api: Api, route: str
) -> None:
    """A wrong file posted whole: its answer stays small (listing every problem made it 50x the body)."""
    response = await api.client.post(
        route,
        content=b"1\n" * 5000,
        headers={**api.auth(await api.token()), "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("5000 problem(s) in the request body (the first 100 listed); nothing")
    assert [v["location"] for v in error["constraintViolations"]] == [f"line {n}" for n in range(1, 101)]
    assert len(response.content) < 20_000


@pytest.mark.parametrize("kind", [b"[]", b'{"a":1}'])
async def test_a_rum_event_whose_type_is_no_text_is_400_not_500(api: Api, kind: bytes) -> None:
    response = await api.client.post(
        "/api/v2/rum/events",
        content=b'{"type":%s,"tenantId":"t","sessionId":"s","eventId":"e","timestamp":1}\n' % kind,
        headers={**api.auth(await api.token()), "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400
    violation = response.json()["error"]["constraintViolations"][0]
    assert (violation["location"], violation["path"]) == ("line 1", "type")


async def test_json_array_problems_are_located_by_index(api: Api) -> None:
    token = await api.token()
    body = b"[" + lines(1)[0] + b',{"tenantId":"t","userSessionId":"x","startTime":true}]'
    response = await post(api, body, token, "application/json")
    violation = response.json()["error"]["constraintViolations"][0]
    assert (violation["location"], violation["path"]) == ("index 1", "startTime")


@pytest.mark.parametrize("body", [b"", b"\n\n  \n", b"[]"])
async def test_empty_body_is_400(api: Api, body: bytes) -> None:
    token = await api.token()
    response = await post(api, body, token, "application/json" if body == b"[]" else "application/x-ndjson")
    assert response.status_code == 400
    assert "no sessions" in response.text or "empty" in response.text


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", ""])
async def test_wrong_content_type_is_400(api: Api, content_type: str) -> None:
    token = await api.token()
    response = await post(api, lines(1)[0], token, content_type)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "application/x-ndjson" in error["message"]
    assert error["constraintViolations"][0]["parameterLocation"] == "HEADER"
    assert await api.store.count_sessions() == 0


async def test_too_large_body_is_413_with_nothing_stored(api: Api) -> None:
    token = await api.token()
    body = b"\n".join(lines(200))
    assert len(body) > 256 * 1024
    response = await post(api, body, token)
    assert response.status_code == 413
    assert await api.store.count_sessions() == 0


async def test_too_large_streamed_body_without_length_is_413(api: Api) -> None:
    token = await api.token()
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for line in lines(400):
            sent += 1
            yield line + b"\n"

    response = await api.client.post(
        "/api/v2/usersessions", content=chunks(), headers={**api.auth(token), **NDJSON}
    )
    assert response.status_code == 413
    assert await api.store.count_sessions() == 0


async def test_authentication_and_scopes(api: Api) -> None:
    body = lines(1)[0]
    missing = await api.client.post("/api/v2/usersessions", content=body, headers=NDJSON)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Api-Token"
    wrong = await post(api, body, "se0c01.AAAAAAAAAAAAAAAAAAAAAAAA." + "B" * 64)
    assert wrong.status_code == 401
    bearer = await api.client.post(
        "/api/v2/usersessions", content=body, headers={"Authorization": "Bearer x", **NDJSON}
    )
    assert bearer.status_code == 401
    reader = await api.token("sessions.read")
    assert (await post(api, body, reader)).status_code == 403
    ingester = await api.token("sessions.ingest")
    listed = await api.client.get("/api/v2/usersessions", headers=api.auth(ingester))
    assert listed.status_code == 403
    assert listed.json()["error"]["message"].endswith("sessions.read")
    assert await api.store.count_sessions() == 0


async def test_a_request_reads_its_token_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before the body is read, and its scope by the route, from the one read."""
    token = await api.token()
    reads: list[str] = []
    get_token = api.store.get_token

    async def counted(token_id: str) -> object:
        reads.append(token_id)
        return await get_token(token_id)

    monkeypatch.setattr(api.store, "get_token", counted)
    lines = b"\n".join(generate_lines(2, 1, GeneratorOptions()))
    headers = {**api.auth(token), "Content-Type": "application/x-ndjson"}
    assert (await api.client.post("/api/v2/usersessions", content=lines, headers=headers)).status_code == 200
    assert (await api.client.get("/api/v2/settings/schemas", headers=api.auth(token))).status_code == 200
    assert len(reads) == 2


async def test_revoked_token_is_refused(api: Api) -> None:
    token = await api.token()
    await api.store.revoke_token(token.split(".")[1], 1)
    assert (await post(api, lines(1)[0], token)).status_code == 401


async def test_an_expired_token_is_refused_saying_so(api: Api) -> None:
    now = now_ms()
    expiring = new_token("ci", frozenset({"sessions.read"}), now - 60_000, expires_at=now - 1)
    await api.store.add_token(expiring.record)
    refused = await api.client.get("/api/v2/usersessions", headers=api.auth(expiring.token))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "The API token has expired; create a new one"
    valid = new_token("ci", frozenset({"sessions.read"}), now, expires_at=now + 3_600_000)
    await api.store.add_token(valid.record)
    assert (await api.client.get("/api/v2/usersessions", headers=api.auth(valid.token))).status_code == 200


async def test_health_and_openapi_are_served(api: Api) -> None:
    health = await api.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = (await api.client.get("/openapi.json")).json()
    assert {"/api/v2/usersessions", "/health"} <= set(spec["paths"])
    assert "ApiToken" in spec["components"]["securitySchemes"]
    docs = await api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_unknown_route_uses_error_envelope(api: Api) -> None:
    response = await api.client.get("/api/v2/nothing", headers=api.auth(await api.token()))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404
    assert (await api.client.get("/api/v2/nothing")).status_code == 401  # no route is told without a token


async def test_filter_by_user_id_keeps_to_it_across_pages(api: Api) -> None:
    token = await api.token()
    docs = [json.loads(line) for line in lines(8, seed=9)]
    for i, doc in enumerate(docs):
        doc["userId"] = "alice@example.com" if i % 2 == 0 else f"other{i}@example.com"
    await post(api, b"\n".join(json.dumps(d).encode() for d in docs), token)
    alice = [d["userSessionId"] for d in reversed(docs) if d["userId"] == "alice@example.com"]
    seen: list[str] = []
    params: dict[str, str | int] = {"userId": "alice@example.com", "pageSize": 3}
    while True:
        page = (await api.client.get("/api/v2/usersessions", params=params, headers=api.auth(token))).json()
        assert {s["userId"] for s in page["userSessions"]} <= {"alice@example.com"}
        seen += [s["userSessionId"] for s in page["userSessions"]]
        if page["nextPageKey"] is None:
            break
        params = {"nextPageKey": page["nextPageKey"]}
    assert seen == alice
