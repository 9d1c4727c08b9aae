"""One exporter run by hand on a real store, for tests of the exporter's own rules (shards,
positions, restarts) without a supervisor deciding what runs where."""

from __future__ import annotations

import asyncio
import ssl
from contextlib import AsyncExitStack

import httpx

from sessionexport.export.auth import NoCredentials
from sessionexport.export.config import ExportConfig
from sessionexport.export.delivery import Sender
from sessionexport.export.exporter import Exporter
from sessionexport.export.metrics import ExportMetrics
from sessionexport.export.notifier import LogNotifier
from sessionexport.export.tuning import ExportTuning
from sessionexport.store import Store
from sessionexport.store.records import Claim
from tests.support.receiver import Receiver, Tls


def plain_config(export_id: str, receiver: Receiver, tuning: ExportTuning) -> ExportConfig:
    return ExportConfig(
        export_id, receiver.url, True, "application/json", False, None, None, None, False, tuning
    )


async def exporter_for(
    stack: AsyncExitStack, store: Store, tls: Tls, config: ExportConfig, shard: int = 0, shards: int = 1
) -> Exporter:
    """An exporter of one shard holding its lease; its HTTP client closes with ``stack``."""
    claim = Claim(config.export_id, shard, shards, "this-worker")
    assert await store.claim_lease(config.export_id, shard, claim.owner, lease_ms=60_000)
    verify = ssl.create_default_context(cafile=str(tls.ca_file))
    client = await stack.enter_async_context(httpx.AsyncClient(verify=verify))
    sender = Sender(config, client, NoCredentials())
    return Exporter(store, config, sender, LogNotifier(), ExportMetrics(), claim)


def run_in_background(stack: AsyncExitStack, work: asyncio.Future[None] | asyncio.Task[None]) -> None:
    """Cancelled, and awaited, when ``stack`` closes."""
    stack.push_async_callback(_cancel, work)


async def _cancel(task: asyncio.Future[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
