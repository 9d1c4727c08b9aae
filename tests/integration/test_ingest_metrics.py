"""What comes in, on /metrics: sessions that joined the log by source, duplicates, RUM events, the
data routes' answers by status (refusals included), and the log's head."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.generate.events import EventOptions, generate_event_streams
from sessionexport.ingest.sessionizer import SessionizerSettings
from tests.conftest import make_token
from tests.support.engine import Engine, running_engine, sessions, until

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

SESSIONS_ROUTE = "/api/v2/usersessions"
EVENTS_ROUTE = "/api/v2/rum/events"
LIMIT = 64 * 1024


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    config = ServerConfig(
        data_dir=tmp_path / "data", max_body_bytes=LIMIT, sessionizer=SessionizerSettings(settle_ms=200)
    )
    async with running_engine(config) as running:
        yield running


async def scrape(engine: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await engine.client.get("/metrics", headers=engine.headers)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def post(engine: Engine, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    sent = {**engine.headers, "Content-Type": "application/x-ndjson"} if headers is None else headers
    return (await engine.client.post(path, content=body, headers=sent)).status_code


async def test_sessions_in_and_every_answer_of_the_ingest_route_are_counted(engine: Engine) -> None:
    lines = sessions(3)
    started = now_ms()
    assert await post(engine, SESSIONS_ROUTE, b"\n".join(lines)) == 200
    assert await post(engine, SESSIONS_ROUTE, b"\n".join(lines)) == 200  # the same again: duplicates
    assert await post(engine, SESSIONS_ROUTE, b'{"tenantId": 1}') == 400
    assert await post(engine, SESSIONS_ROUTE, b"\n".join(sessions(40, seed=2))) == 413
    assert (
        await post(engine, SESSIONS_ROUTE, lines[0], headers={"Content-Type": "application/x-ndjson"}) == 401
    )
    metrics_only = await make_token(engine.app.state.store, frozenset({"metrics.read"}))
    forbidden = {"Authorization": f"Api-Token {metrics_only}", "Content-Type": "application/x-ndjson"}
    assert await post(engine, SESSIONS_ROUTE, lines[0], headers=forbidden) == 403
    assert await post(engine, SESSIONS_ROUTE + "?x=%00", lines[0]) == 400  # refused at the door
    # reading the sessions is no ingest request, whatever its answer
    assert (await engine.client.get(SESSIONS_ROUTE, headers=engine.headers)).status_code == 200
    assert (await engine.client.get(SESSIONS_ROUTE)).status_code == 401

    samples = await scrape(engine)
    assert value(samples, "sessionexport_sessions_ingested_total", source="api") == 3
    assert value(samples, "sessionexport_sessions_duplicate_total", source="api") == 3
    assert value(samples, "sessionexport_sessions_ingested_total", source="rum") == 0
    answers = {
        code: value(samples, "sessionexport_ingest_requests_total", route=SESSIONS_ROUTE, code=code)
        for code in ("200", "400", "401", "403", "413")
    }
    assert answers == {"200": 2, "400": 2, "401": 1, "403": 1, "413": 1}
    newest = value(samples, "sessionexport_log_newest_session_timestamp_seconds")
    assert started / 1000 - 1 <= newest <= now_ms() / 1000
    # other routes are not counted as ingest requests
    assert not any(
        name == "sessionexport_ingest_requests_total" and dict(labels)["route"] == "/metrics"
        for name, labels in samples
    )


async def test_an_empty_log_has_no_newest_session(engine: Engine) -> None:
    samples = await scrape(engine)
    assert ("sessionexport_log_newest_session_timestamp_seconds", ()) in samples
    assert value(samples, "sessionexport_log_newest_session_timestamp_seconds") == 0
    # the series exist before anything came, so that rate() sees the first sessions
    assert ("sessionexport_sessions_ingested_total", (("source", "api"),)) in samples


async def test_rum_events_and_the_sessions_completed_from_them_are_counted(engine: Engine) -> None:
    options = EventOptions(end_ms=now_ms(), span_ms=600_000, end_event_ratio=1.0, duplicate_ratio=0.2)
    lines = list(generate_event_streams(8, 3, options))
    requests = [lines[start : start + 20] for start in range(0, len(lines), 20)]
    for chunk in requests:
        assert await post(engine, EVENTS_ROUTE, b"\n".join(chunk)) == 200
    assert await post(engine, EVENTS_ROUTE, b"not an event") == 400
    unique = [orjson.loads(line) for line in dict.fromkeys(lines)]
    ended = {e["sessionId"] for e in unique if e["type"] == "end"}
    assert ended

    async def completed() -> bool:
        samples = await scrape(engine)
        return value(samples, "sessionexport_sessions_ingested_total", source="rum") >= len(ended)

    await until(completed, "the ended sessions completed", within=30)
    samples = await scrape(engine)
    assert value(samples, "sessionexport_sessions_ingested_total", source="rum") == len(ended)
    assert value(samples, "sessionexport_sessions_ingested_total", source="api") == 0
    accepted = value(samples, "sessionexport_rum_events_total", result="accepted")
    duplicate = value(samples, "sessionexport_rum_events_total", result="duplicate")
    assert accepted == len(unique) and duplicate == len(lines) - len(unique) > 0
    assert value(samples, "sessionexport_ingest_requests_total", route=EVENTS_ROUTE, code="200") == len(
        requests
    )
    assert value(samples, "sessionexport_ingest_requests_total", route=EVENTS_ROUTE, code="400") == 1


async def test_events_beyond_what_an_open_session_holds_are_answered_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Errors without user actions, sent for hours, never complete a session: beyond its limit
    they are not kept, and never silently."""
    settings = SessionizerSettings(settle_ms=60_000, event_limit=3)
    config = ServerConfig(data_dir=tmp_path / "data", sessionizer=settings)
    now = now_ms()
    errors = [
        orjson.dumps(
            {
                "type": "error",
                "tenantId": "t1",
                "sessionId": "s1",
                "eventId": f"e{n}",
                "timestamp": now + n,
                "error": {"name": "TypeError", "type": "Error"},
            }
        )
        for n in range(5)
    ]
    async with running_engine(config) as engine:
        sent = {**engine.headers, "Content-Type": "application/x-ndjson"}
        response = await engine.client.post(EVENTS_ROUTE, content=b"\n".join(errors), headers=sent)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 3, "duplicates": 0, "late": 0, "overflow": 2}
        samples = await scrape(engine)
    assert value(samples, "sessionexport_rum_events_total", result="overflow") == 2
    assert "2 event(s) not kept: their open session already holds 3 events" in caplog.text
