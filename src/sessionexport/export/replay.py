"""Dead letters sent again: replayed as the export sends now (its format, splitting on 413, its
current authentication), one at a time.

Each letter is claimed and read just before it is sent, so that one body is held at a time and
two replays at once send it once (the other skips it); the claim is renewed while the letter goes
(split on 413, it can take far longer than one bulk's attempts) and lapses, after a replay that
crashed, when its attempts could no longer be under way. A delivered letter closes its shard's
delivery alerts at once: a long replay is not "failing" meanwhile.

A replay follows the export as it is saved: before each letter it reads the configuration again,
so that an edit (endpoint, authentication, format) holds from the next letter on, and a pause or a
delete stops it, the letters it did not send left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx

from sessionexport.clock import now_ms
from sessionexport.export.bulk_delivery import deliver_bulk
from sessionexport.export.config import ExportConfig
from sessionexport.export.deadletters import letter_entries
from sessionexport.export.delivery import RETRY_AFTER_MAX_SECONDS, Attempt, Outcome, Sender
from sessionexport.export.exporter import ENDPOINT_ALERTS, closed_by_success
from sessionexport.export.metrics import ExportMetrics
from sessionexport.store import Store
from sessionexport.store.records import DeadLetter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    letter_id: int
    delivered: bool
    outcome: Outcome
    skipped: bool = False  # another replay was sending it, or it was no longer pending: not sent


@dataclass(frozen=True)
class ReplayTally:
    """A replay's results counted: the letters it sent (delivered or failed again) and skipped."""

    sent: list[ReplayResult]
    skipped: list[int]

    @classmethod
    def of(cls, results: list[ReplayResult]) -> ReplayTally:
        return cls([r for r in results if not r.skipped], [r.letter_id for r in results if r.skipped])

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.sent)

    @property
    def failed(self) -> list[ReplayResult]:
        return [r for r in self.sent if not r.delivered]


# Why a replay cannot start on this server, whose keys cannot decrypt the export's secrets.
UNDECRYPTABLE = (
    "this server's keys cannot decrypt the export's secrets: give it the key they were stored with"
    " (SESSIONEXPORT_SECRET_KEY, or the secret.key it had), or enter them again"
)


class DeliveryRefused(Exception):
    """The export may not be sent from this process: its stored endpoint is one it may not send to
    (an http:// URL stored while the server allowed it on loopback, read by one that does not), or
    its keys cannot decrypt the export's secrets (UNDECRYPTABLE)."""


class Replayer:
    def __init__(
        self,
        store: Store,
        metrics: ExportMetrics,
        client: Callable[[], httpx.AsyncClient],
        sender: Callable[[ExportConfig, httpx.AsyncClient], Sender],
        refused: Callable[[ExportConfig], str | None],
        saved: Callable[[str], Awaitable[ExportConfig | None]],
    ) -> None:
        """``client`` and ``sender``: as the exporters send; ``refused``: why an export may not be
        sent to from this process (None: it may); ``saved``: an export's configuration as it is
        saved now, secrets decrypted (None: deleted)."""
        self.store = store
        self.metrics = metrics
        self.client = client
        self.sender = sender
        self._refused = refused
        self._saved = saved
        self._replays: set[asyncio.Task[None]] = set()  # replays started in the background

    def cancel_all(self) -> None:
        """Stop the background replays (their claims run out, their letters stay pending)."""
        for replay in list(self._replays):
            replay.cancel()

    async def replay(self, config: ExportConfig, letter_ids: list[int]) -> list[ReplayResult]:
        """Send dead letters again, as the export sends now, with its current authentication;
        each claimed and read just before it is sent (one body held at a time), skipped when
        another replay holds it or it is no longer pending: two replays at once send it once.
        ``DeliveryRefused`` when the export may not be sent to from here (as its exporter is not),
        or is paused. Letters left unsent by an edit that paused, deleted or redirected the export
        where it may not be sent are listed as skipped."""
        if refusal := self._not_sendable(config):
            raise DeliveryRefused(refusal)
        results: list[ReplayResult] = []
        delivered_shards: set[int] = set()  # the shards a delivered letter closed the alerts of
        async with self.client() as client:
            sender = self.sender(config, client)
            for number, letter_id in enumerate(letter_ids):
                now_saved, stop = await self._as_saved_now(config)
                if stop is not None:
                    log.warning(
                        "export %s: replay stopped, %d dead letter(s) left pending: %s",
                        config.export_id,
                        len(letter_ids) - number,
                        stop,
                    )
                    results += [_skipped(i) for i in letter_ids[number:]]
                    break
                if now_saved != config:  # edited: sent from this letter on as it says
                    config, sender = now_saved, self.sender(now_saved, client)
                now, claim_ms = now_ms(), _replay_claim_ms(config)
                letter = await self.store.claim_dead_letter(letter_id, config.export_id, now, now + claim_ms)
                if letter is None:
                    results.append(_skipped(letter_id))
                    continue
                try:
                    async with self._claim_held(letter.id, now + claim_ms, claim_ms):
                        outcome = await _resend(sender, config, letter)
                except Exception as exc:  # a fault of ours: said, and the letter left pending, unclaimed
                    log.exception("export %s: replaying dead letter %d failed", config.export_id, letter.id)
                    outcome = Outcome(False, [Attempt(1, now_ms(), 0, error=f"the replay failed: {exc}")])
                await self.store.finish_replay(
                    letter.id,
                    [a.as_json() for a in outcome.attempts],
                    outcome.delivered,
                    now_ms(),
                    reason=None if outcome.delivered else outcome.alert_title,
                )
                if outcome.delivered:
                    self.metrics.replayed.labels(config.export_id).inc(len(letter.sessions))
                    self.metrics.bytes.labels(config.export_id).inc(len(letter.body))
                    if (shard := letter.first_seq % config.tuning.shards) not in delivered_shards:
                        delivered_shards.add(shard)  # at once: a long replay is not "failing" meanwhile
                        await self._close_delivery_alerts(config, [letter.first_seq])
                results.append(ReplayResult(letter.id, outcome.delivered, outcome))
        if delivered_shards:
            await self.store.note_replayed(config.export_id, now_ms())
        return results

    def _not_sendable(self, config: ExportConfig) -> str | None:
        if not config.enabled:
            return "the export is paused: resume it to send its dead letters"
        return self._refused(config)

    async def _as_saved_now(self, config: ExportConfig) -> tuple[ExportConfig, str | None]:
        """The export's configuration as saved now, and why the replay stops there (None: it goes on)."""
        try:
            saved = await self._saved(config.export_id)
        except Exception as exc:  # its secrets no longer decrypt, the store failed: nothing more is sent
            return config, f"its configuration could not be read ({exc})"
        if saved is None:
            return config, "the export was deleted"
        return saved, self._not_sendable(saved)

    @contextlib.asynccontextmanager
    async def _claim_held(self, letter_id: int, until: int, claim_ms: int) -> AsyncIterator[None]:
        """Renew a replay's claim on a letter while it is sent (split on 413, a letter can take
        far longer than one bulk's attempts), so that no other replay sends it meanwhile."""

        async def renew(held_until: int) -> None:
            while True:
                await asyncio.sleep(claim_ms / 3000)
                later = now_ms() + claim_ms
                try:
                    renewed = await self.store.renew_replay_claim(letter_id, held_until, later)
                except Exception as exc:  # the store hiccupped: two thirds of the claim are left to retry
                    log.warning(
                        "replaying dead letter %d: renewing its claim failed (%s); trying again",
                        letter_id,
                        exc,
                    )
                    continue
                if not renewed:
                    log.warning(
                        "replaying dead letter %d: its claim lapsed; another replay may send it too",
                        letter_id,
                    )
                    return
                held_until = later

        renewing = asyncio.create_task(renew(until), name=f"claim of dead letter {letter_id}")
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _close_delivery_alerts(self, config: ExportConfig, first_seqs: list[int]) -> None:
        """A replayed letter that was delivered shows that the endpoint takes its shard's bulks
        again: the alerts saying otherwise close by the rule of the exporter's own success."""
        if not first_seqs:
            return
        shards, now = config.tuning.shards, now_ms()
        delivered = {seq % shards for seq in first_seqs}
        for alert in await self.store.list_alerts(open_only=True):
            if alert.export_id == config.export_id and any(
                closed_by_success(alert.kind, shard, shards, ENDPOINT_ALERTS) for shard in delivered
            ):
                await self.store.close_alerts(config.export_id, alert.kind, now)

    def replay_in_background(self, config: ExportConfig, letter_ids: list[int]) -> None:
        """``replay`` in a task of its own, for many letters: a page's request does not wait
        minutes for them. ``DeliveryRefused`` at once; how it went is logged, and the letters
        leave the pending list as they are delivered."""
        if refusal := self._not_sendable(config):
            raise DeliveryRefused(refusal)
        task = asyncio.create_task(self._replay_logged(config, letter_ids), name=f"replay {config.export_id}")
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay_logged(self, config: ExportConfig, letter_ids: list[int]) -> None:
        try:
            results = await self.replay(config, letter_ids)
        except Exception:
            log.exception("export %s: replay of %d dead letter(s) failed", config.export_id, len(letter_ids))
            return
        tally = ReplayTally.of(results)
        log.info(
            "export %s: replay of %d dead letter(s) done: %d delivered, %d still failing, %d skipped",
            config.export_id,
            len(letter_ids),
            tally.delivered,
            len(tally.failed),
            len(tally.skipped),
        )


def _skipped(letter_id: int) -> ReplayResult:
    return ReplayResult(letter_id, False, Outcome(delivered=False), skipped=True)


async def _resend(sender: Sender, config: ExportConfig, letter: DeadLetter) -> Outcome:
    """A letter sent again as the export sends now (format, splitting on 413, Elasticsearch's
    items); one whose body does not hold its sessions line by line goes as it was kept."""
    entries = letter_entries(letter)
    if entries is None:
        items = len(letter.sessions) if config.send_direct else None
        return await sender.send(letter.body, content_type=letter.content_type, items=items)
    return (await deliver_bulk(sender, entries, config.send_direct)).outcome()


def _replay_claim_ms(config: ExportConfig) -> int:
    """Long enough for every attempt of one request (each up to a token request and two sends,
    after a 401, within its timeout; the waits between them), with a margin: renewed while a
    replay goes on, a claim lapses this long after a replay that crashed."""
    t = config.tuning
    wait = max(t.backoffMaxSeconds, RETRY_AFTER_MAX_SECONDS)
    return int(((t.retries + 1) * 3 * t.timeoutSeconds + t.retries * wait + 60) * 1000)
