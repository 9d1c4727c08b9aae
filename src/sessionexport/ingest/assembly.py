"""The sessionizer at work: keeps events, looks at quiet sessions, appends the completed ones to
the session log like any ingested session (then the exporters take them from there).

    POST /api/v2/rum/events ─▶ accept ─▶ rum_events (durable) ─┐
                                                              │ every second: sweep
    session log ◀── complete_part ◀── assemble ◀── next_part ◀┘ (sessions quiet for settle_ms)

The rules (when complete, what it contains) are ``sessionizer``'s, free of I/O.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from sessionexport.clock import now_ms
from sessionexport.export.notifier import LogNotifier
from sessionexport.ingest.documents import to_record
from sessionexport.ingest.events import ReceivedEvent
from sessionexport.ingest.metrics import RUM, IngestMetrics
from sessionexport.ingest.sessionizer import (
    Part,
    SessionizerSettings,
    assemble,
    belongs_until,
    due_at,
    next_part,
)
from sessionexport.model.events import AttributesEvent, RumEvent
from sessionexport.model.validation import decode_session, single_line
from sessionexport.store import Store
from sessionexport.store.records import CompletedPart, EventsResult, NewEvent, OpenSession
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)

SWEEP_SECONDS = 1.0
SWEEP_BATCH = 200
RETRY_MS = 60_000
_decoder = msgspec.json.Decoder(RumEvent)


class Sessionizer:
    def __init__(
        self,
        store: Store,
        notifier: LogNotifier,
        settings: SessionizerSettings | None = None,
        clock: Callable[[], int] = now_ms,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings or SessionizerSettings()
        self.clock = clock
        self.metrics = metrics or IngestMetrics()
        self._overflows = Throttle()

    async def accept(self, received: Sequence[ReceivedEvent]) -> EventsResult:
        now = self.clock()
        events = [
            NewEvent(
                r.event.tenantId,
                r.event.sessionId,
                r.event.eventId,
                r.event.timestamp,
                _kind(r.event),
                single_line(r.raw),
            )
            for r in received
        ]
        result = await self.store.add_events(
            events, now, check_at=now + self.settings.settle_ms, limit=self.settings.event_limit
        )
        if result.overflow and (quiet := self._overflows.allows()) is not None:
            log.warning(
                "sessionizer: %d event(s) not kept: their open session already holds %d events%s",
                result.overflow,
                self.settings.event_limit,
                recurring(quiet),
            )
        return result

    async def sweep(self) -> int:
        """Complete what is complete among the sessions due now; return how many sessions were appended."""
        completed = 0
        while due := await self.store.due_sessions(self.clock(), SWEEP_BATCH):
            for session in due:
                try:
                    completed += await self._look_at(session)
                except Exception:  # one broken session must not stop the others: logged, looked at later
                    log.exception(
                        "sessionizer: session %s/%s could not be completed",
                        session.tenant_id,
                        session.session_id,
                    )
                    await self._postpone(session, self.clock() + RETRY_MS)
            if len(due) < SWEEP_BATCH:
                break
        if completed:
            self.notifier.notify()
        return completed

    async def _postpone(self, session: OpenSession, check_at: int | None) -> None:
        part = CompletedPart(
            session.tenant_id,
            session.session_id,
            None,
            (),
            None,
            session.split,
            check_at,
            None,
            session.arrivals,
        )
        await self.store.complete_part(part, self.clock())

    async def run(self, interval: float = SWEEP_SECONDS) -> None:
        failures = Throttle()
        while True:
            try:
                await self.sweep()
            except Exception:  # a bad sweep must not end sessionizing: logged, tried again
                if (quiet := failures.allows()) is not None:
                    log.exception("sessionizer: sweep failed%s; will retry", recurring(quiet))
            else:
                if failures.reset():
                    log.warning("sessionizer: sweeps succeed again")
            await asyncio.sleep(interval)

    async def _look_at(self, session: OpenSession) -> int:
        now = self.clock()
        # Decoding and assembling are CPU work: off the event loop, so the API keeps answering.
        decision = await asyncio.to_thread(self._decide, session, now)
        result = await self.store.complete_part(decision, now)
        if decision.session is not None:
            self.metrics.joined(RUM, result.accepted, result.duplicates)
        return result.accepted

    def _decide(self, session: OpenSession, now: int) -> CompletedPart:
        """What to write for an open session: a completed part, events that make no session, or
        only when to look at it again."""
        events = [_decoder.decode(body) for body in session.events]
        part = next_part(events, now, self.settings, session.last_arrival, session.clock_lag)
        keep = functools.partial(
            CompletedPart,
            session.tenant_id,
            session.session_id,
            seen_arrivals=session.arrivals,
            seen_part=session.part,
        )
        if part is None:
            wake = due_at(events, self.settings, session.last_arrival, session.clock_lag)
            check_at = max(wake, now + self.settings.settle_ms) if wake is not None else None
            return keep(None, (), None, session.split, check_at)
        ids, until = tuple(e.eventId for e in part.events), belongs_until(part, events, self.settings)
        again = None if part.final else now  # the rest may be complete too: look again at once
        if not part.has_actions:
            _log_without_actions(session, part)
            # No session, but one that ended here all the same: what follows numbers from 1.
            return keep(None, ids, until, session.split and part.continues, again)
        # Numbered: the parts of a session that outgrew a limit, the last one too. What follows a
        # session that ended (an inactivity gap) is a session of its own, numbered from 1.
        numbered = session.split or part.continues
        # A session that ended at a gap takes none of the attributes of the one after it.
        attributes = [
            e
            for e in events
            if isinstance(e, AttributesEvent) and (numbered or part.final or e.timestamp <= until)
        ]
        number = session.part - session.parts_before + 1 if numbered else None
        document = assemble(session.tenant_id, session.session_id, part, attributes, number, self.settings)
        if session.last_start is not None and document["startTime"] <= session.last_start:
            _start_after(document, session.last_start)
        raw = msgspec.json.encode(document)
        record = to_record(decode_session(raw), raw)  # checked like any ingested session
        return keep(record, ids, until, part.continues, again, document["startTime"])


def _log_without_actions(session: OpenSession, part: Part) -> None:
    log.warning(
        "sessionizer: %d event(s) of session %s/%s without a user action make no session (%s); not kept",
        len(part.events),
        session.tenant_id,
        session.session_id,
        ", ".join(sorted({_kind(e) for e in part.events})),
    )


def _start_after(document: dict[str, Any], previous: int) -> None:
    """Sessions completed under one session id (the parts of a split one, or a session that
    follows an earlier one) may not share a startTime (the log's identity: the later one would be
    taken for a duplicate, and lost with its events): one whose actions began no later than the
    previous one's start starts one millisecond after it."""
    document["startTime"] = previous + 1
    document["endTime"] = max(document["endTime"], document["startTime"])
    document["duration"] = document["endTime"] - document["startTime"]


def _kind(event: RumEvent) -> str:
    return type(event).__struct_config__.tag  # type: ignore[return-value]
