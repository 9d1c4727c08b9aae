"""What an export would send, before it sends anything: sample data and the test export.

Both take up to 50 sessions that joined the log in the last 7 days (the newest ones, in the
export's management zone if it has one), as many of them as the exporter's first bulk would hold
(its flush rules: 896,000 bytes by default), and put them in the body the exporter would build. The
test export then sends that body once, exactly as the exporter would (method, content type,
authentication, timeout), and reports what came back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sessionexport.export.batching import Batcher
from sessionexport.export.bulk_delivery import BulkResult, deliver_bulk
from sessionexport.export.config import ExportConfig, export_config
from sessionexport.export.delivery import OAUTH_FAILURE_PREFIX, Sender
from sessionexport.export.formats import bulk_body, encoded_size
from sessionexport.export.zones import Zone, zone_from_value
from sessionexport.model.mapping import index_creation, mapping
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.validation import Violation
from sessionexport.store import Store
from sessionexport.store.records import LogEntry

SAMPLE_SESSIONS = 50
WINDOW_MS = 7 * 24 * 3600 * 1000
_PAGE = 500
_MAX_SCANNED = 20_000  # a zone that matches nothing recent is not searched for ever


class NoSessions(LookupError):
    """Nothing to show or send: no session of the last 7 days (in the export's zone)."""


async def export_zone(settings: SettingsService, config: ExportConfig) -> Zone | None:
    """The management zone an export is restricted to (None: every session)."""
    if not config.management_zone:
        return None
    record = await settings.get(config.management_zone)
    if record is None:  # deleted while the export was changed to name it: every session is not the answer
        raise NoSessions(
            f"The export's management zone {config.management_zone} does not exist: nothing to send"
        )
    return zone_from_value(settings.plain_value(record))


async def preview_sessions(
    store: Store, settings: SettingsService, config: ExportConfig, now: int
) -> list[LogEntry]:
    """The sessions a preview of ``config`` shows or sends: ``sample_entries`` in its zone, as
    many as its first bulk would hold."""
    return first_bulk(config, await sample_entries(store, await export_zone(settings, config), now))


def first_bulk(config: ExportConfig, entries: list[LogEntry]) -> list[LogEntry]:
    """The leading ``entries`` that the exporter would send in one bulk (``Batcher``'s rules)."""
    batcher = Batcher(config.tuning)
    sizes = [encoded_size(e, config.send_direct) for e in entries]
    ready = batcher.offer_all(entries, sizes)
    return ready[0].entries if ready else batcher.take().entries


async def unsaved_config(
    settings: SettingsService, value: Any, *, secrets_needed: bool
) -> tuple[ExportConfig | None, list[Violation]]:
    """An export value that need not be saved, as the exporter would run it; None with the
    violations when it is invalid (see ``SettingsService.check_export_value``)."""
    normalized, violations = await settings.check_export_value(value, secrets_needed=secrets_needed)
    return (None if violations else export_config("unsaved", normalized)), violations


async def saved_config(
    settings: SettingsService, object_id: str, *, secrets_needed: bool = False
) -> ExportConfig | None:
    """A saved export's configuration (None: no such export); its secrets decrypted only for
    what sends, so that reading status, samples or dead letters works while keys are rotated."""
    record = await settings.get_export(object_id)
    if record is None:
        return None
    value = settings.plain_value(record) if secrets_needed else settings.masked_value(record)
    return export_config(object_id, value)


def mapping_of(config: ExportConfig, *, index: bool = False) -> dict[str, Any]:
    """The Elasticsearch mapping of the export's documents (wrapped in its document type when it
    has one), or with ``index`` the body of the ``PUT /<index>`` that creates the index."""
    doc_type = config.send_direct.doc_type if config.send_direct else None
    return index_creation(doc_type) if index else mapping(doc_type)


async def sample_entries(store: Store, zone: Zone | None, now: int) -> list[LogEntry]:
    """Up to 50 of the newest sessions of the window that the export would send, in log order."""
    found: list[LogEntry] = []
    before: int | None = None
    for _ in range(_MAX_SCANNED // _PAGE):
        page = await store.recent_log(now - WINDOW_MS, _PAGE, before)
        found += [e for e in page if zone is None or zone.contains(e)]
        if len(found) >= SAMPLE_SESSIONS or len(page) < _PAGE:
            break
        before = page[-1].seq
    if not found:
        where = " in the export's management zone" if zone is not None else ""
        raise NoSessions(f"No sessions from the last 7 days{where}: nothing to send")
    return sorted(found[:SAMPLE_SESSIONS], key=lambda e: e.seq)


def sample_body(config: ExportConfig, entries: list[LogEntry]) -> bytes:
    return bulk_body(entries, config.send_direct)


@dataclass
class ExportTestResult:
    success: bool
    sessions_sent: int  # in the request sent: 0 when it did not go out whole (connection, TLS, token)
    status_code: int | None = None
    response_time_ms: int | None = None
    error: str | None = None
    item_errors: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "statusCode": self.status_code,
            "responseTimeMs": self.response_time_ms,
            "error": self.error,
            "sessionsSent": self.sessions_sent,
            "itemErrors": self.item_errors,
        }


async def run_test_export(sender: Sender, entries: list[LogEntry]) -> ExportTestResult:
    """One delivery without retries (a 413 still splits the bulk, as the exporter would)."""
    result = await deliver_bulk(sender, entries, sender.config.send_direct, retries=0)
    return _report(result, len(entries))


def _report(result: BulkResult, sent: int) -> ExportTestResult:
    last = result.failure().last if result.unsent else result.attempts[-1]
    report = ExportTestResult(
        success=result.complete,
        sessions_sent=sent if last.sent else 0,
        status_code=last.status,
        response_time_ms=sum(a.duration_ms for a in result.attempts),
        error=_explain(last.error, last.status, last.token_failure) if result.unsent else None,
    )
    report.item_errors = [
        {
            "userSessionId": r.entry.user_session_id,
            "status": r.item.status,
            "type": r.item.error_type,
            "reason": r.item.reason,
        }
        for r in result.rejected
    ]
    if result.rejected and report.error is None:
        report.error = f"{len(result.rejected)} of {sent} session(s) rejected by Elasticsearch"
    return report


def _explain(error: str | None, status: int | None, token_failure: bool) -> str:
    if token_failure:
        return f"the access token could not be obtained: {(error or '').removeprefix(OAUTH_FAILURE_PREFIX)}"
    if status in (401, 403):
        return f"the endpoint refused the credentials ({error or f'HTTP {status}'})"
    return error or f"HTTP {status}"
