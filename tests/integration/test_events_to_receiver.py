"""RUM events in, sessions completed by the sessionizer, delivered by the exporter to an HTTPS
receiver on loopback: the whole path in one process."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from sessionexport.clock import now_ms
from sessionexport.config import ServerConfig
from sessionexport.generate.events import EventOptions, generate_event_streams
from sessionexport.ingest.sessionizer import SessionizerSettings
from tests.integration.test_export_engine import receiver, tls
from tests.support.engine import Engine, export_value, running_engine, until
from tests.support.receiver import Receiver, Tls

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

__all__ = ["receiver", "tls"]


@pytest.fixture
async def engine(tmp_path: Path, tls: Tls) -> AsyncIterator[Engine]:
    settle = SessionizerSettings(settle_ms=200)  # quick completions in tests
    config = ServerConfig(data_dir=tmp_path / "data", ca_bundle=tls.ca_file, sessionizer=settle)
    async with running_engine(config) as running:
        yield running


async def test_events_become_sessions_that_reach_the_receiver(engine: Engine, receiver: Receiver) -> None:
    await engine.create_export(export_value(receiver.url))
    lines = list(
        generate_event_streams(
            20,
            3,
            EventOptions(
                end_ms=now_ms(), span_ms=600_000, end_event_ratio=1.0, duplicate_ratio=0.2, disorder=5
            ),
        )
    )
    headers = {**engine.headers, "Content-Type": "application/x-ndjson"}
    for start in range(0, len(lines), 37):  # several requests, events of many sessions mixed
        response = await engine.client.post(
            "/api/v2/rum/events", content=b"\n".join(lines[start : start + 37]), headers=headers
        )
        assert response.status_code == 200, response.text
    events = [orjson.loads(line) for line in dict.fromkeys(lines)]
    actions = Counter(e["sessionId"] for e in events if e["type"] == "action")
    # Sessions whose end falls after the stream's end are still open (they will time out later).
    # A crash ends those of mobile and custom applications too.
    apps = {
        e["sessionId"]: e["attributes"].get("applicationType") for e in events if e["type"] == "attributes"
    }
    crashed = {
        e["sessionId"]
        for e in events
        if e["type"] == "error"
        and e["error"]["type"] == "Crash"
        and apps.get(e["sessionId"]) in ("MOBILE_APPLICATION", "CUSTOM_APPLICATION")
    }
    ended = sorted({e["sessionId"] for e in events if e["type"] == "end"} | crashed)
    assert len(ended) >= 15
    await until(
        lambda: len(receiver.sessions()) >= len(ended), "the ended sessions at the receiver", within=30
    )
    delivered = [orjson.loads(line) for line in receiver.sessions()]
    assert sorted(s["userSessionId"] for s in delivered) == ended  # each once, none lost
    for session in delivered:
        assert session["userActionCount"] == actions[session["userSessionId"]]
        assert session["endReason"] == "END_EVENT"
        assert session["duration"] == session["endTime"] - session["startTime"]
        assert all("apdexCategory" in action for action in session["userActions"])
