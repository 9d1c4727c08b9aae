"""Server configuration: what ``serve`` and the app factory need, with the documented defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sessionexport.clock import DAY_MS
from sessionexport.export.leases import DEFAULT_LEASE_SECONDS, DEFAULT_MAX_IN_FLIGHT
from sessionexport.ingest.sessionizer import SessionizerSettings
from sessionexport.request_bodies import BUFFER_WAIT_SECONDS, DEFAULT_BUFFER_BYTES

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
INGEST_BATCH_SESSIONS = 1000  # sessions `ingest` stores per transaction
DEFAULT_RETENTION_DAYS = 7.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    database_url: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ingest_buffer_bytes: int = DEFAULT_BUFFER_BYTES  # request bodies the ingest routes hold at once
    ingest_wait_seconds: float = BUFFER_WAIT_SECONDS  # for room in that buffer, before a 503
    retention_days: float = DEFAULT_RETENTION_DAYS
    retention_check_seconds: float = 600.0
    secret_keys: str | None = None  # comma-separated Fernet keys, newest first; default: data_dir/secret.key
    allow_http_loopback: bool = False  # accept http:// endpoints on loopback (local development only)
    ca_bundle: Path | None = None  # extra CA certificates trusted for export and token endpoints
    proxy: str | None = None  # an HTTP proxy (CONNECT) that export and token requests go through
    run_exporters: bool = True  # and the sessionizer's sweeps: the process that does background work
    lease_seconds: float = DEFAULT_LEASE_SECONDS  # how long a worker holds an export shard unrenewed
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # bulks this process sends at once to one export
    sessionizer: SessionizerSettings = field(default_factory=SessionizerSettings)

    @property
    def retention_ms(self) -> int:
        return int(self.retention_days * DAY_MS)
