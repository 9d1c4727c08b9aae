"""Who exports what when several processes share one database: rules without I/O.

Every process that runs exporters (``serve``, ``worker``) is a worker with a name of its own.
Each export is split into shards (the ``shards`` knob, default 1); a *unit* of work is one shard
of one export, and a worker exports a unit only while it holds that unit's lease in the store.

- Leases last ``lease_seconds`` (default 15) by the database's clock and are renewed by a
  heartbeat every third of that, together with the worker's own entry among the live workers.
  A worker that stops renewing (killed, paused, cut off) loses its leases when they expire, and
  a live worker takes them over at its next heartbeat: a unit is unowned for at most
  ``lease_seconds`` plus one heartbeat.
- Each worker aims at a fair share of the units (``fair_share``): when workers come or go, those
  above their share hand units over (gracefully: the bulks in flight are decided first, so
  nothing is sent twice) and those below take free ones.
- Safety does not rest on timing: every cursor write checks the lease in its own transaction,
  so a worker that lost a lease can no longer move that cursor (see ``store.base``).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Sequence

Unit = tuple[str, int]  # (export id, shard)

DEFAULT_LEASE_SECONDS = 15.0
DEFAULT_MAX_IN_FLIGHT = 32


def worker_name() -> str:
    """Unique per process start, and telling where it runs: host/pid/random."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def fair_share(units: int, workers: Sequence[str], me: str) -> int:
    """How many of ``units`` worker ``me`` should hold: an even split over the live workers, the
    first ones in name order holding one more when it does not divide evenly (so that the shares
    add up to ``units`` exactly, and every worker computes the same split)."""
    everyone = sorted({*workers, me})
    base, extra = divmod(units, len(everyone))
    return base + (1 if everyone.index(me) < extra else 0)


def claim_order(units: Iterable[Unit]) -> list[Unit]:
    """Free units are tried shard by shard across exports, so that a worker's share spreads over
    the exports rather than taking every shard of the first."""
    return sorted(units, key=lambda unit: (unit[1], unit[0]))


def to_hand_over(held: Iterable[Unit], target: int) -> list[Unit]:
    """The units above ``target`` to give up: the last in claim order, the first taken stay."""
    return claim_order(held)[max(target, 0) :]
