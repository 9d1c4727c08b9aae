"""Runs one Exporter per shard of an enabled export that this process holds the lease of, and
keeps them in step with the settings and with the other workers sharing the database.

Every few seconds (and when poked by a settings write) it: beats (renews its leases and its entry
among the live workers, see ``leases``), stops at once the exporters whose lease was lost, reads
the settings, restarts from the durable cursor the exporters whose configuration changed, stops
those of paused (``enableUserSessionExport: false``) or deleted exports (a deleted one loses its
cursor), hands over the shards above its fair share and takes free ones up to it. An exporter that
crashes is restarted with backoff, never silently dropped; one whose lease was lost is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from sessionexport.clock import now_ms
from sessionexport.export.auth import credentials_for
from sessionexport.export.config import ExportConfig, export_config
from sessionexport.export.delivery import Sender
from sessionexport.export.exchange import exporter_client, ssl_context
from sessionexport.export.exporter import Exporter
from sessionexport.export.leases import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_IN_FLIGHT,
    Unit,
    claim_order,
    fair_share,
    to_hand_over,
    worker_name,
)
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier, wait_for_at_most
from sessionexport.export.preview import saved_config
from sessionexport.export.replay import UNDECRYPTABLE, DeliveryRefused, Replayer, ReplayResult
from sessionexport.export.zones import zone_from_value
from sessionexport.settings.objects import SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA, ZONE_SCHEMA
from sessionexport.settings.secrets import SecretKeyError
from sessionexport.settings.validation import Context, check_https_url
from sessionexport.store import Store
from sessionexport.store.base import LeaseLost
from sessionexport.store.records import Claim, SettingsRecord, WorkState
from sessionexport.throttle import Throttle, recurring

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 2.0
RESTART_BACKOFF_SECONDS = (1, 2, 5, 10, 30)
FAILURES_FORGOTTEN_SECONDS = 60.0  # an exporter that ran this long before failing starts over at 1 s
HAND_OVER_SECONDS = 10.0  # for the bulks in flight to be decided before a shard changes hands
SHUTDOWN_SECONDS = 3.0  # the same when the process stops (it is being waited for)
STALE_WORKER_ALERT_SECONDS = 300.0  # a worker standing aside raises its alerts again every 60 s


@dataclass
class _Running:
    key: tuple[object, ...]
    exporter: Exporter
    client: httpx.AsyncClient
    task: asyncio.Task[None]


@dataclass(frozen=True)
class _Wanted:
    """An enabled export as the settings have it, and what identifies that version of it."""

    config: ExportConfig
    zone: SettingsRecord | None
    key: tuple[object, ...]

    def units(self) -> list[Unit]:
        return [(self.config.export_id, shard) for shard in range(self.config.tuning.shards)]


@dataclass(frozen=True)
class Unrunnable:
    """Why this process cannot run an enabled export: the alert's title, and what to do."""

    title: str
    remedy: str


UNREADABLE = Unrunnable(
    "Exporter failed: its secrets cannot be decrypted with a worker's key",
    "its keys decrypt them (SESSIONEXPORT_SECRET_KEY as the other workers have it, or the secret.key"
    " they were stored with; or enter the secrets again)",
)


class CannotExport(Exception):
    """Enabled exports this process cannot run (their secrets do not decrypt with its keys, their
    endpoint is one it may not send to), by export id; ``held_back``: the enabled exports it could
    run, and leaves to others meanwhile."""

    def __init__(self, exports: dict[str, Unrunnable], held_back: Iterable[str] = ()) -> None:
        super().__init__(", ".join(exports))
        self.exports = exports
        self.held_back = sorted(held_back)

    def said(self, elsewhere: set[str]) -> dict[str, Unrunnable]:
        """What to say on each export: why it cannot run here, or, for one it could run that no
        other worker runs (as of the last heartbeat: on one process, none), that it waits for
        the others to be fixed."""
        waiting = Unrunnable(
            "Exporter stopped: its worker cannot run another export",
            f"it can run every enabled export ({', '.join(self.exports)} cannot run here: see their"
            " alerts; fix or pause them)",
        )
        return self.exports | {e: waiting for e in self.held_back if e not in elsewhere}


def worker_alert_kind(owner: str) -> str:
    """The kind of the alert a worker that cannot run an export raises on it: its own, closed when
    it can again or stops, not by another worker's success (which says nothing of this one)."""
    return f"worker:{owner}"


async def starting_position(store: Store, record: SettingsRecord) -> int:
    """Where a new export starts: just before the sessions that joined the log once it was created."""
    return await store.position_before(record.created)


async def place_new_export(store: Store, record: SettingsRecord) -> None:
    """An export's cursor, at its starting position, when it has none yet (retention places it
    too, so that the sessions it is owed are counted if they expire unexported)."""
    if await store.get_cursor(record.object_id) is None:
        await store.ensure_cursor(record.object_id, await starting_position(store, record), now_ms())


class ExportSupervisor:
    def __init__(
        self,
        store: Store,
        settings: SettingsService,
        notifier: LogNotifier,
        metrics: ExportMetrics,
        *,
        ca_bundle: Path | None = None,
        proxy: str | None = None,
        allow_http_loopback: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics
        self.owner = worker_name()
        self.lease_seconds = lease_seconds
        self._ssl = ssl_context(ca_bundle)
        self._proxy = proxy
        self._allow_http_loopback = allow_http_loopback
        # Bulks in flight, capped per export: one slow or failing endpoint, whose requests wait out
        # their timeouts and backoffs, never takes the slots another export sends with.
        self._max_in_flight = max_in_flight
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._running: dict[Unit, _Running] = {}
        self._held: set[Unit] = set()  # leases this worker holds, as of the last heartbeat
        self._handing_over: dict[Unit, asyncio.Task[None]] = {}
        self._elsewhere: set[str] = set()  # exports another live worker holds a lease of
        self._beat_at = time.monotonic()
        self._placed: set[str] = set()  # exports known to have a cursor
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.replayer = Replayer(
            store,
            metrics,
            self.client,
            self.sender,
            self._refusal,
            self.sending_config,
        )
        self._aside = Throttle()  # standing aside, for exports this process cannot run: said now and then
        self._aside_from: set[str] = set()  # the exports it stands aside for, each with an alert of its own
        self._stale_check = Throttle(STALE_WORKER_ALERT_SECONDS / 3)
        self._without_zone: set[str] = set()  # exports naming a zone that does not exist, alerted

    @property
    def period(self) -> float:
        """Between two heartbeats (and settings reads): a third of the lease at most."""
        return min(RECONCILE_SECONDS, self.lease_seconds / 3)

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> None:
        failures = Throttle()
        try:
            while True:
                try:
                    await self.reconcile()
                except Exception:
                    if (quiet := failures.allows()) is not None:
                        log.exception(
                            "exports: reconciling with the settings and leases failed%s; will retry",
                            recurring(quiet),
                        )
                    await self._stop_if_leases_expired()
                else:
                    if failures.reset():
                        log.warning("exports: reconciling succeeds again")
                await wait_for_at_most(self._changed.wait(), self.period)
                self._changed.clear()
        finally:
            await self.stop_all()

    def poke(self) -> None:
        """The settings changed: reconcile now."""
        self._changed.set()

    def is_running(self, export_id: str) -> bool:
        """Whether an exporter of the export runs, here or (as of the last heartbeat) in another worker."""
        here = any(u[0] == export_id and not r.task.done() for u, r in self._running.items())
        return here or export_id in self._elsewhere

    async def reconcile(self) -> None:
        async with self._lock:
            records = await self.settings.all(EXPORT_SCHEMA)
            try:
                wanted = await self._wanted(records)
            except CannotExport as exc:
                await self._stand_aside(exc)
                return
            await self._stop_standing_aside()
            state = await self._beat()
            await self._place_new(records)
            await self._follow_settings(wanted)
            await self._balance(wanted, state)
            await self._forget_deleted({r.object_id for r in records})
            await self._close_stale_worker_alerts()

    async def stop_all(self) -> None:
        """Stop every exporter (the bulks in flight decided first, for a while) and give up the
        leases; background replays stop too (their claims run out, their letters stay pending)."""
        self.replayer.cancel_all()
        async with self._lock:
            await self._leave()
            await self._close_worker_alerts(self._aside_from)  # a process gone cannot be fixed

    async def _leave(self) -> None:
        """Hand every shard over and leave the workers: the others take over at once."""
        await asyncio.gather(*(self._hand_over(unit, SHUTDOWN_SECONDS) for unit in list(self._running)))
        for task in list(self._handing_over.values()):
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self.store.retire_worker(self.owner)
        self._held.clear()

    async def _stand_aside(self, cannot: CannotExport) -> None:
        """This process cannot run some enabled export (its keys cannot decrypt the secrets, or the
        endpoint is an http:// URL it may not send to): it exports nothing, and is not counted as
        a worker (it would be handed shards it could never run, which would stall, or would hold
        them from a worker that can), until that changes. Said on each such export, as an alert
        of this worker's own that stays open meanwhile, and in the log."""
        await self._leave()
        with contextlib.suppress(Exception):  # what this process tells of who runs what: no heartbeat now
            self._elsewhere = {lease.export_id for lease in await self.store.list_leases()}
        said = cannot.said(self._elsewhere)
        await self._close_worker_alerts(self._aside_from - said.keys())  # fixed, or run elsewhere, meanwhile
        self._aside_from = set(said)
        if (quiet := self._aside.allows()) is None:
            return
        for export_id, why in sorted(said.items()):
            log.error(
                "export %s: %s; this process exports nothing and leaves every export to workers that can"
                " run them all, until %s%s",
                export_id,
                why.title,
                why.remedy,
                recurring(quiet),
            )
            with contextlib.suppress(Exception):  # raised again now and then: proof it still stands aside
                await self.store.raise_alert(
                    export_id,
                    worker_alert_kind(self.owner),
                    why.title,
                    f"Worker {self.owner} exports nothing until {why.remedy}.",
                    now_ms(),
                )

    async def _stop_standing_aside(self) -> None:
        if self._aside.reset():
            log.warning("exports: this process can run every enabled export again; it exports again")
        await self._close_worker_alerts(self._aside_from)
        self._aside_from = set()

    async def _close_worker_alerts(self, export_ids: set[str]) -> None:
        for export_id in sorted(export_ids):
            with contextlib.suppress(Exception):
                await self.store.close_alerts(export_id, worker_alert_kind(self.owner), now_ms())

    async def _close_stale_worker_alerts(self) -> None:
        """Close the alerts of workers that stood aside and were killed since: not raised again
        for a while (a worker standing aside raises its alerts again every minute)."""
        if self._stale_check.allows() is None:
            return
        now = now_ms()
        for alert in await self.store.list_alerts(open_only=True):
            stale = now - alert.last_seen_at > STALE_WORKER_ALERT_SECONDS * 1000
            if alert.kind.startswith(worker_alert_kind("")) and stale:
                await self.store.close_alerts(alert.export_id, alert.kind, now)

    # -- leases ------------------------------------------------------------------------------
    async def _beat(self) -> WorkState:
        """Renew the leases; stop at once the exporters of those that were lost."""
        state = await self.store.heartbeat(self.owner, int(self.lease_seconds * 1000))
        self._beat_at = time.monotonic()
        mine = {(lease.export_id, lease.shard) for lease in state.leases if lease.owner == self.owner}
        owners = {(lease.export_id, lease.shard): lease.owner for lease in state.leases}
        for unit in sorted(self._held - mine):
            if unit in owners:  # it expired here (a stall, a cut connection) and was taken over
                log.warning("export %s: shard %d: lease lost to %s; its exporter stops", *unit, owners[unit])
            else:
                log.info(
                    "export %s: shard %d: lease revoked (the export moved or went); its exporter stops", *unit
                )
            await self._stop(unit)
        self._held = mine
        self._elsewhere = {lease.export_id for lease in state.leases if lease.owner != self.owner}
        return state

    async def _stop_if_leases_expired(self) -> None:
        """No heartbeat got through for a whole lease: the leases are gone, another may export."""
        if self._running and time.monotonic() - self._beat_at > self.lease_seconds:
            log.warning("exports: no heartbeat for %.0fs; stopping every exporter", self.lease_seconds)
            async with self._lock:
                for unit in list(self._running):
                    await self._stop(unit)
                self._held.clear()

    async def _balance(self, wanted: dict[str, _Wanted], state: WorkState) -> None:
        """Give up leases of units nobody wants, hand over those above the fair share, take free
        ones up to it, and run an exporter for every unit held."""
        units = {unit: want for want in wanted.values() for unit in want.units()}
        for unit in sorted(self._held - units.keys() - self._handing_over.keys()):
            await self._release(unit)
        target = fair_share(len(units), state.workers, self.owner)
        for unit in to_hand_over(self._held - self._handing_over.keys(), target):
            self._handing_over[unit] = asyncio.create_task(self._hand_over(unit), name=f"hand over {unit}")
        taken = {(lease.export_id, lease.shard) for lease in state.leases}
        for unit in claim_order(units.keys() - taken):
            if len(self._held) >= target:
                break
            if await self.store.claim_lease(*unit, self.owner, int(self.lease_seconds * 1000)):
                self._held.add(unit)
        for unit in sorted(self._held & units.keys() - self._handing_over.keys()):
            if unit not in self._running:
                await self._start(units[unit], unit[1])

    async def _hand_over(self, unit: Unit, within: float = HAND_OVER_SECONDS) -> None:
        """Stop the unit's exporter gracefully (``_stop_gracefully``) and free its lease."""
        await self._stop_gracefully(unit, within)
        await self._release(unit)
        self._handing_over.pop(unit, None)

    async def _stop_gracefully(self, unit: Unit, within: float = HAND_OVER_SECONDS) -> None:
        """Stop the unit's exporter once its bulks in flight are decided (or ``within`` seconds
        passed: then they are sent again by whoever exports the unit next)."""
        running = self._running.get(unit)
        if running is not None:
            running.exporter.stop_gracefully()
            await asyncio.wait([running.task], timeout=within)
            await self._stop(unit)

    async def _follow_up(self, unit: Unit) -> None:
        """The exporter of an edited or paused export, stopped gracefully: the next round (at
        once) starts it with its new configuration, or gives the lease of a paused one up."""
        await self._stop_gracefully(unit)
        self._handing_over.pop(unit, None)
        self.poke()

    async def _release(self, unit: Unit) -> None:
        await self._stop(unit)
        self._held.discard(unit)
        with contextlib.suppress(Exception):  # else it expires
            await self.store.release_lease(*unit, self.owner)

    # -- settings ----------------------------------------------------------------------------
    async def _wanted(self, records: list[SettingsRecord]) -> dict[str, _Wanted]:
        """The enabled exports among the settings objects; ``CannotExport`` when this process
        cannot run one of them."""
        zones = {z.object_id: z for z in await self.settings.all(ZONE_SCHEMA)}
        wanted: dict[str, _Wanted] = {}
        cannot: dict[str, Unrunnable] = {}
        for record in records:
            if not export_config(record.object_id, self.settings.masked_value(record)).enabled:
                continue  # a paused export's secrets are not needed (nor read) here
            try:
                value = self.settings.plain_value(record)
            except SecretKeyError:
                cannot[record.object_id] = UNREADABLE
                continue
            config = export_config(record.object_id, value)
            if refusal := self._refusal(config):
                cannot[record.object_id] = Unrunnable(
                    f"Request failed: {refusal}",
                    "its endpoint is https:// (or it runs with --allow-http-loopback, for local development)",
                )
                continue
            zone = zones.get(config.management_zone) if config.management_zone else None
            if config.management_zone and zone is None:
                await self._zone_missing(config)
                continue
            self._without_zone.discard(record.object_id)
            key = (record.version, zone.version if zone else None)
            wanted[record.object_id] = _Wanted(config, zone, key)
        if cannot:
            raise CannotExport(cannot, held_back=wanted)
        return wanted

    async def _zone_missing(self, config: ExportConfig) -> None:
        """Its zone was deleted while the export was changed to name it: exporting every session
        would send what the zone keeps out, so it exports nothing (its cursor waits) until it
        names one that exists. Said once per process; its next delivery closes the alert."""
        if config.export_id in self._without_zone:
            return
        self._without_zone.add(config.export_id)
        title = f"Exporter stopped: its management zone {config.management_zone} does not exist"
        log.error("export %s: %s; it exports nothing until it names one that does", config.export_id, title)
        await self.store.raise_alert(
            config.export_id,
            "zone",
            title,
            "Nothing is exported (the sessions wait) until the export names a management zone that exists.",
            now_ms(),
        )

    async def _place_new(self, records: list[SettingsRecord]) -> None:
        """A new export starts with the sessions that joined the log once it was created: not at
        the end of the log as it is when a worker first sees it, which may be a reconcile period
        later, or much later when no worker ran. One created paused keeps that place, as a
        paused export keeps its cursor."""
        for record in sorted(records, key=lambda r: r.object_id):
            if record.object_id not in self._placed:
                await place_new_export(self.store, record)
                self._placed.add(record.object_id)

    async def _follow_settings(self, wanted: dict[str, _Wanted]) -> None:
        """Stop exporters whose export changed (restarted by ``_balance``), was paused or deleted:
        in the background, once their bulks in flight are decided (nothing is sent twice for an
        edit or a pause), as a hand-over does; at once those that ended by themselves."""
        for unit, running in list(self._running.items()):
            if unit in self._handing_over:
                continue
            want = wanted.get(unit[0])
            if running.task.done():
                await self._stop(unit)
            elif want is None or want.key != running.key:
                self._handing_over[unit] = asyncio.create_task(self._follow_up(unit), name=f"stop {unit}")

    async def _forget_deleted(self, present: set[str]) -> None:
        """Forget the exports whose cursors outlived their settings object: deleted since, here or
        while no worker ran. A cursor is placed only once its object exists, so one whose object
        is still missing when the settings are read again, after the cursors, was deleted."""
        self._placed &= present
        orphans = {c.export_id for c in await self.store.list_cursors()} - present
        if orphans:
            orphans -= {r.object_id for r in await self.settings.all(EXPORT_SCHEMA)}
        for deleted in sorted(orphans):
            # Deleting an export is refused while it has pending letters; one its exporter kept
            # in the moment before it stopped goes with it, said here.
            if pending := await self.store.count_dead_letters(deleted):
                log.warning(
                    "export %s deleted: %d pending dead letter(s) kept meanwhile go with it", deleted, pending
                )
            await self.store.delete_cursor(deleted)

    # -- one shard of one export ---------------------------------------------------------------
    def sender(self, config: ExportConfig, client: httpx.AsyncClient) -> Sender:
        return Sender(config, client, credentials_for(config.auth, client, config.tuning.timeoutSeconds))

    def client(self) -> httpx.AsyncClient:
        return exporter_client(self._ssl, proxy=self._proxy)

    async def _start(self, want: _Wanted, shard: int) -> None:
        config = want.config
        start = await self.store.log_position()  # a new export starts from now; an old one from its cursor
        client = self.client()
        exporter = Exporter(
            self.store,
            config,
            self.sender(config, client),
            self.notifier,
            self.metrics,
            Claim(config.export_id, shard, config.tuning.shards, self.owner),
            zone=zone_from_value(self.settings.plain_value(want.zone)) if want.zone else None,
            slots=self._slots.setdefault(config.export_id, asyncio.Semaphore(self._max_in_flight)),
        )
        name = f"export {config.export_id} shard {shard}"
        task = asyncio.create_task(self._keep_running(exporter, start), name=name)
        self._running[(config.export_id, shard)] = _Running(want.key, exporter, client, task)

    async def _keep_running(self, exporter: Exporter, start: int) -> None:
        failures, said = 0, Throttle()  # a failure that recurs: logged once a minute at most
        while True:
            started = time.monotonic()
            try:
                await exporter.run(start)
                return
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:  # not restarted here; the next heartbeat tells why it was lost
                log.info("export %s: %s; its exporter stops", exporter.export_id, exc)
                return
            except Exception as exc:
                if time.monotonic() - started > FAILURES_FORGOTTEN_SECONDS:
                    failures = 0  # a run that lasted: this failure starts a new count "in a row"
                delay = RESTART_BACKOFF_SECONDS[min(failures, len(RESTART_BACKOFF_SECONDS) - 1)]
                failures += 1
                if (quiet := said.allows()) is not None:
                    log.exception(
                        "export %s: exporter failed%s; restarting in %ss",
                        exporter.export_id,
                        recurring(quiet),
                        delay,
                    )
                with contextlib.suppress(Exception):
                    await self._report_failure(exporter, exc, failures, delay)
                await asyncio.sleep(delay)

    async def _report_failure(self, exporter: Exporter, exc: Exception, failures: int, delay: float) -> None:
        """An exporter that keeps failing delivers nothing: its status must say so (an alert makes
        it "failing"), not show it running. The exporter closes the alert once a run has read the
        log to its end, or at its next delivery."""
        now = now_ms()
        await self.store.record_error(exporter.export_id, f"exporter failed: {exc}", now)
        if not exporter.config.disable_notification:
            message = f"It failed {failures} time(s) in a row and is restarted in {delay:g} s: {exc}"
            kind = exporter.alert_kind("exporter")
            await self.store.raise_alert(exporter.export_id, kind, f"Exporter failed: {exc}", message, now)

    async def _stop(self, unit: Unit) -> None:
        running = self._running.pop(unit, None)
        if running is None:
            return
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await running.task
        await running.client.aclose()
        if not any(u[0] == unit[0] for u in self._running):
            self._slots.pop(unit[0], None)  # its metrics stay: a pause or an edit is no reset

    def _refusal(self, config: ExportConfig) -> str | None:
        """Defence in depth: settings validation already refuses these URLs."""
        context = Context(allow_http_loopback=self._allow_http_loopback)
        for url in (config.endpoint_url, getattr(config.auth, "token_url", None)):
            if url is not None and (problem := check_https_url(context, url)):
                return f"{urlsplit(url).scheme}:// URL refused: {problem}"
        return None

    # -- operations --------------------------------------------------------------------------
    async def sending_config(self, export_id: str) -> ExportConfig | None:
        """A saved export's configuration as a replay sends it, its secrets decrypted (None: no such
        export); ``DeliveryRefused`` when this process's keys cannot decrypt them."""
        try:
            return await saved_config(self.settings, export_id, secrets_needed=True)
        except SecretKeyError:
            raise DeliveryRefused(UNDECRYPTABLE) from None

    async def replay(self, config: ExportConfig, letter_ids: list[int]) -> list[ReplayResult]:
        """``Replayer.replay``, with this process's client and authentication."""
        return await self.replayer.replay(config, letter_ids)

    def replay_in_background(self, config: ExportConfig, letter_ids: list[int]) -> None:
        """``Replayer.replay_in_background``."""
        self.replayer.replay_in_background(config, letter_ids)

    async def move(self, export_id: str, position: int) -> None:
        """Move an export's cursor. Its leases are revoked with it: its exporters, here or in
        another worker, stop, and start again from there once a worker has taken the leases anew."""
        async with self._lock:
            for unit in [u for u in self._running if u[0] == export_id]:
                await self._stop(unit)
            await self.store.move_cursor(export_id, position, now_ms())
            self._held = {u for u in self._held if u[0] != export_id}
        self.poke()
