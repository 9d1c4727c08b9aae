"""Runs one Exporter per enabled export configuration and keeps them in step with the settings.

Settings writes poke the supervisor; it also re-reads them every few seconds (another process may
have changed them). A changed configuration restarts its exporter from the durable cursor; a paused
one (``enableUserSessionExport: false``) is stopped and keeps its cursor; a deleted one loses it.
An exporter that crashes is restarted with backoff, never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import httpx

from sessionexport.clock import now_ms
from sessionexport.export.auth import credentials_for
from sessionexport.export.config import ExportConfig, export_config
from sessionexport.export.delivery import Outcome, Sender
from sessionexport.export.exporter import Exporter
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier, wait_for_at_most
from sessionexport.export.zones import zone_from_value
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from sessionexport.settings.validation import Context, check_https_url
from sessionexport.store import Store
from sessionexport.store.records import DeadLetter, SettingsRecord

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)


@dataclass
class _Running:
    key: tuple[object, ...]
    exporter: Exporter
    client: httpx.AsyncClient
    task: asyncio.Task[None]


@dataclass(frozen=True)
class ReplayResult:
    letter_id: int
    delivered: bool
    outcome: Outcome


def ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Certificates are always verified: the public CAs, plus ``ca_bundle`` when given."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_bundle is not None:
        context.load_verify_locations(cafile=str(ca_bundle))
    return context


class ExportSupervisor:
    def __init__(
        self,
        store: Store,
        settings: SettingsService,
        notifier: LogNotifier,
        metrics: ExportMetrics,
        *,
        ca_bundle: Path | None = None,
        allow_http_loopback: bool = False,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics
        self._ssl = ssl_context(ca_bundle)
        self._allow_http_loopback = allow_http_loopback
        self._running: dict[str, _Running] = {}
        self._known: set[str] = set()
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.reconcile()
                except Exception:
                    log.exception("exports: reconciling with the settings failed; will retry")
                await wait_for_at_most(self._changed.wait(), RECONCILE_SECONDS)
                self._changed.clear()
        finally:
            await self.stop_all()

    def poke(self) -> None:
        """The settings changed: reconcile now."""
        self._changed.set()

    def is_running(self, export_id: str) -> bool:
        running = self._running.get(export_id)
        return running is not None and not running.task.done()

    async def reconcile(self) -> None:
        async with self._lock:
            records = await self.settings.all(EXPORT_SCHEMA)
            zones = {z.object_id: z for z in await self.settings.all(ZONE_SCHEMA)}
            desired: dict[str, tuple[ExportConfig, SettingsRecord | None, tuple[object, ...]]] = {}
            for record in records:
                config = export_config(record.object_id, self.settings.plain_value(record))
                if not config.enabled:
                    continue
                zone = zones.get(config.management_zone) if config.management_zone else None
                desired[record.object_id] = (config, zone, (record.version, zone.version if zone else None))
            for export_id in list(self._running):
                if export_id not in desired or desired[export_id][2] != self._running[export_id].key:
                    await self._stop(export_id)
            for export_id, (config, zone, key) in desired.items():
                if export_id not in self._running:
                    await self._start(config, zone, key)
            known = {r.object_id for r in records}
            for deleted in self._known - known:
                await self.store.delete_cursor(deleted)
            self._known = known

    async def stop_all(self) -> None:
        async with self._lock:
            for export_id in list(self._running):
                await self._stop(export_id)

    # -- one export --------------------------------------------------------------------------
    def sender(self, config: ExportConfig, client: httpx.AsyncClient) -> Sender:
        return Sender(config, client, credentials_for(config.auth, client, config.tuning.timeoutSeconds))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=self._ssl, follow_redirects=False, trust_env=False)

    async def _start(
        self, config: ExportConfig, zone: SettingsRecord | None, key: tuple[object, ...]
    ) -> None:
        refusal = self._refusal(config)
        if refusal:
            log.error("export %s: not started: %s", config.export_id, refusal)
            await self.store.raise_alert(
                config.export_id, "delivery", f"Request failed: {refusal}", refusal, now_ms()
            )
            return
        client = self.client()
        exporter = Exporter(
            self.store,
            config,
            self.sender(config, client),
            self.notifier,
            self.metrics,
            zone=zone_from_value(self.settings.plain_value(zone)) if zone else None,
        )
        start = await self.store.log_position()  # a new export starts from now; an old one from its cursor
        task = asyncio.create_task(self._keep_running(exporter, start), name=f"export {config.export_id}")
        self._running[config.export_id] = _Running(key, exporter, client, task)

    async def _keep_running(self, exporter: Exporter, start: int) -> None:
        failures = 0
        while True:
            try:
                await exporter.run(start)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)]
                failures += 1
                log.exception("export %s: exporter failed; restarting in %ss", exporter.export_id, delay)
                with contextlib.suppress(Exception):
                    await self.store.record_error(exporter.export_id, f"exporter failed: {exc}", now_ms())
                await asyncio.sleep(delay)

    async def _stop(self, export_id: str) -> None:
        running = self._running.pop(export_id)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task
        await running.client.aclose()
        self.metrics.forget(export_id)

    def _refusal(self, config: ExportConfig) -> str | None:
        """Defence in depth: settings validation already refuses these URLs."""
        context = Context(allow_http_loopback=self._allow_http_loopback)
        for url in (config.endpoint_url, getattr(config.auth, "token_url", None)):
            if url is not None and (problem := check_https_url(context, url)):
                return f"{urlsplit(url).scheme}:// URL refused: {problem}"
        return None

    # -- operations --------------------------------------------------------------------------
    async def replay(self, config: ExportConfig, letters: list[DeadLetter]) -> list[ReplayResult]:
        """Send dead letters again, exactly as kept, with the export's current authentication."""
        results = []
        async with self.client() as client:
            sender = self.sender(config, client)
            for letter in letters:
                items = len(letter.sessions) if config.send_direct else None
                outcome = await sender.send(letter.body, content_type=letter.content_type, items=items)
                await self.store.finish_replay(
                    letter.id, [a.as_json() for a in outcome.attempts], outcome.delivered, now_ms()
                )
                if outcome.delivered:
                    self.metrics.sessions.labels(config.export_id).inc(len(letter.sessions))
                    self.metrics.bytes.labels(config.export_id).inc(len(letter.body))
                results.append(ReplayResult(letter.id, outcome.delivered, outcome))
        return results

    async def move(self, export_id: str, position: int) -> None:
        """Move an export's cursor (its exporter restarts from there)."""
        async with self._lock:
            if export_id in self._running:
                await self._stop(export_id)
            await self.store.move_cursor(export_id, position, now_ms())
        self.poke()
