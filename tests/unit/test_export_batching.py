"""Dynatrace's flush rules: the Batcher's (count, bytes) and the FlushTimer's (quiet period,
oldest-session age). No I/O."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sessionexport.export.batching import Batcher, Bulk, FlushTimer, wait_left
from sessionexport.export.tuning import DYNATRACE_MAX_BYTES, DYNATRACE_MAX_SESSIONS, ExportTuning
from sessionexport.store.records import LogEntry

SMALL = ExportTuning(flushMaxSessions=3, flushMaxBytes=100, flushQuietSeconds=30, flushIntervalSeconds=5)


def entry(seq: int, received_at: int = 0) -> LogEntry:
    return LogEntry(
        seq=seq,
        received_at=received_at,
        tenant_id="t",
        user_session_id=f"u{seq}",
        start_time=1_000 + seq,
        user_type="REAL_USER",
        application_type="WEB_APPLICATION",
        country="Austria",
        applications=("easyTravel",),
        body=b'{"userSessionId":"u%d"}' % seq,
    )


def seqs(bulk: Bulk) -> list[int]:
    return [e.seq for e in bulk.entries]


def feed(batcher: Batcher, sizes: list[int]) -> list[list[int]]:
    """Offer entries 1..n with the given sizes; the groupings of every bulk, the pending rest last."""
    groups = [seqs(bulk) for seq, size in enumerate(sizes, 1) for bulk in batcher.offer(entry(seq), size)]
    if batcher.pending:
        groups.append(seqs(batcher.take()))
    return groups


def test_defaults_are_dynatrace_behaviour() -> None:
    tuning = ExportTuning()
    assert (DYNATRACE_MAX_SESSIONS, DYNATRACE_MAX_BYTES) == (1000, 896_000)
    assert tuning.flushMaxSessions == 1000
    assert tuning.flushMaxBytes == 896_000
    assert tuning.flushQuietSeconds == 30
    assert tuning.flushIntervalSeconds == 5
    assert tuning.retries == 3
    assert tuning.timeoutSeconds == 30


# --- count rule ---------------------------------------------------------------------------------------


def test_count_rule_returns_a_bulk_at_exactly_max_sessions() -> None:
    batcher = Batcher(SMALL)
    assert batcher.offer(entry(1), 1) == []
    assert batcher.offer(entry(2), 1) == []
    ready = batcher.offer(entry(3), 1)
    assert len(ready) == 1
    assert seqs(ready[0]) == [1, 2, 3]
    assert ready[0].size == 3
    assert (ready[0].first_seq, ready[0].last_seq) == (1, 3)
    assert batcher.pending == []
    assert batcher.size == 0


def test_count_rule_starts_over_after_a_flush() -> None:
    assert feed(Batcher(SMALL), [1] * 8) == [[1, 2, 3], [4, 5, 6], [7, 8]]


def test_default_count_rule_flushes_at_1000_sessions() -> None:
    batcher = Batcher(ExportTuning())
    for seq in range(1, 1000):
        assert batcher.offer(entry(seq), 10) == []
    ready = batcher.offer(entry(1000), 10)
    assert [len(b.entries) for b in ready] == [1000]
    assert ready[0].size == 10_000


# --- byte rule ----------------------------------------------------------------------------------------


def test_byte_rule_flushes_the_pending_bulk_before_the_entry_that_would_overflow() -> None:
    batcher = Batcher(SMALL)
    assert batcher.offer(entry(1), 40) == []
    assert batcher.offer(entry(2), 40) == []
    ready = batcher.offer(entry(3), 30)  # 80 + 30 > 100
    assert [seqs(b) for b in ready] == [[1, 2]]
    assert ready[0].size == 80
    # the overflowing entry starts the next bulk
    assert [e.seq for e in batcher.pending] == [3]
    assert batcher.size == 30


def test_byte_rule_does_not_split_a_bulk_that_reaches_the_limit_exactly() -> None:
    # 40 + 60 == 100 is not over the limit: both go together, the next entry starts a new bulk
    assert feed(Batcher(SMALL), [40, 60, 5]) == [[1, 2], [3]]


def test_a_bulk_that_reaches_the_byte_limit_exactly_is_complete_at_once() -> None:
    # nothing more can fit, so it does not wait for the next session or a timer
    batcher = Batcher(SMALL)
    assert batcher.offer(entry(1), 40) == []
    ready = batcher.offer(entry(2), 60)
    assert [seqs(b) for b in ready] == [[1, 2]]
    assert ready[0].size == 100
    assert batcher.pending == []


def test_byte_rule_one_byte_over_the_limit_splits() -> None:
    assert feed(Batcher(SMALL), [40, 61, 5]) == [[1], [2, 3]]


def test_entry_larger_than_the_limit_goes_alone_when_nothing_is_pending() -> None:
    batcher = Batcher(SMALL)
    ready = batcher.offer(entry(1), 150)
    assert [seqs(b) for b in ready] == [[1]]
    assert ready[0].size == 150
    assert batcher.pending == []
    assert batcher.size == 0


def test_entry_larger_than_the_limit_after_pending_entries_gives_two_bulks_in_order() -> None:
    batcher = Batcher(SMALL)
    assert batcher.offer(entry(1), 10) == []
    assert batcher.offer(entry(2), 20) == []
    ready = batcher.offer(entry(3), 150)
    assert [seqs(b) for b in ready] == [[1, 2], [3]]
    assert [b.size for b in ready] == [30, 150]
    assert batcher.pending == []
    # what follows starts a fresh bulk
    assert batcher.offer(entry(4), 5) == []
    assert [e.seq for e in batcher.pending] == [4]
    assert batcher.size == 5


def test_big_entries_in_a_row_each_go_alone() -> None:
    assert feed(Batcher(SMALL), [5, 500, 101, 5, 5]) == [[1], [2], [3], [4, 5]]


def test_sizes_are_summed() -> None:
    batcher = Batcher(SMALL)
    batcher.offer(entry(1), 7)
    batcher.offer(entry(2), 11)
    assert batcher.size == 18
    bulk = batcher.take()
    assert bulk.size == 18
    assert seqs(bulk) == [1, 2]


def test_take_resets_and_does_not_share_the_list() -> None:
    batcher = Batcher(SMALL)
    batcher.offer(entry(1), 7)
    bulk = batcher.take()
    assert batcher.pending == []
    assert batcher.size == 0
    batcher.offer(entry(2), 3)
    assert seqs(bulk) == [1]  # the taken bulk is not touched by later offers
    assert batcher.size == 3


# --- time rules ---------------------------------------------------------------------------------------


def timer_of(
    tuning: ExportTuning = SMALL, *, first: int, last: int, now: int, mono: float = 100.0
) -> FlushTimer:
    """A timer that saw a bulk begin with a session that joined at ``first`` and the newest join
    at ``last`` (epoch ms), both at wall-clock ``now`` and monotonic ``mono``."""
    timer = FlushTimer(tuning)
    timer.started(entry(1, received_at=first), now, mono)
    timer.arrived(last, now, mono)
    return timer


def test_age_rule_counts_from_the_oldest_pending_session() -> None:
    timer = timer_of(first=10_000, last=13_000, now=12_000)  # interval 5 s, quiet 30 s
    # age: 10_000 + 5_000 - 12_000; quiet: 30 s (13_000 is ahead of now: counts as now)
    assert timer.seconds_left(100.0) == 3.0
    assert timer.seconds_left(102.5) == 0.5


def test_quiet_rule_counts_from_the_last_arrival() -> None:
    tuning = ExportTuning(flushMaxSessions=3, flushMaxBytes=100, flushQuietSeconds=2, flushIntervalSeconds=60)
    timer = timer_of(tuning, first=0, last=10_000, now=10_500)
    # age: 0 + 60_000 - 10_500; quiet: 10_000 + 2_000 - 10_500
    assert timer.seconds_left(100.0) == 1.5


@pytest.mark.parametrize(
    ("received_at", "last_arrival", "now", "expected"),
    [
        (0, 0, 0, 5.0),  # age (5 s) is earlier than quiet (30 s)
        (0, 0, 4_999, 0.001),
        (0, 0, 5_000, 0.0),
        (0, 0, 9_000, 0.0),  # overdue: never negative
        (100_000, 0, 1_000, 5.0),  # a join ahead of the clock counts as now: 5 s at most
        (100_000, 0, 40_000, 0.0),  # quiet: over
        (100_000, 90_000, 101_000, 4.0),
    ],
)
def test_whichever_rule_is_earlier_wins(
    received_at: int, last_arrival: int, now: int, expected: float
) -> None:
    timer = timer_of(first=received_at, last=last_arrival, now=now)
    assert timer.seconds_left(100.0) == pytest.approx(expected)


def test_a_clock_stepped_after_a_session_was_seen_changes_nothing() -> None:
    """The deadlines run on the monotonic clock: an hour back (or forward) on the wall clock
    afterwards neither holds the pending sessions for that hour nor sends them early."""
    timer = timer_of(first=1_000_000, last=1_000_000, now=1_000_000, mono=50.0)
    later = FlushTimer(SMALL)
    later.started(entry(2, received_at=1_000_000), now=1_000_000 - 3_600_000, mono=50.0)
    later.arrived(1_000_000, now=1_000_000 - 3_600_000, mono=50.0)
    for t in (timer, later):
        assert t.seconds_left(54.0) == pytest.approx(1.0)
        assert t.seconds_left(55.0) == 0.0


def test_fractional_seconds() -> None:
    tuning = ExportTuning(flushQuietSeconds=0.75, flushIntervalSeconds=0.25)
    assert timer_of(tuning, first=1_000, last=1_000, now=1_000).seconds_left(100.0) == 0.25
    assert timer_of(tuning, first=1_000, last=0, now=1_000).seconds_left(100.0) == 0.0  # quiet: over


def test_wait_left_is_between_nothing_and_the_whole_wait() -> None:
    assert wait_left(0, 5, 2_000) == 3.0
    assert wait_left(0, 5, 7_000) == 0.0
    assert wait_left(9_000, 5, 2_000) == 5.0


# --- property -----------------------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    max_sessions=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=1, max_value=200),
)
def test_bulks_partition_the_entries_in_order_within_limits(
    sizes: list[int], max_sessions: int, max_bytes: int
) -> None:
    batcher = Batcher(ExportTuning(flushMaxSessions=max_sessions, flushMaxBytes=max_bytes))
    offered = [entry(seq) for seq in range(1, len(sizes) + 1)]
    size_of = dict(zip(range(1, len(sizes) + 1), sizes, strict=True))
    bulks: list[Bulk] = []
    for e, size in zip(offered, sizes, strict=True):
        ready = batcher.offer(e, size)
        assert len(ready) <= 2
        bulks.extend(ready)
        # what stays pending could still take more: a full bulk is never left waiting
        assert len(batcher.pending) < max_sessions
        assert batcher.size < max_bytes
    flushed = len(bulks)
    final = batcher.take()
    assert batcher.pending == []
    assert batcher.size == 0
    if final.entries:
        bulks.append(final)

    assert [e for b in bulks for e in b.entries] == offered
    for index, bulk in enumerate(bulks):
        assert bulk.entries, "no empty bulk"
        assert bulk.size == sum(size_of[e.seq] for e in bulk.entries)
        assert len(bulk.entries) <= max_sessions
        if len(bulk.entries) >= 2:
            assert bulk.size <= max_bytes
        if index < flushed:
            # nothing flushed early: full by count, by bytes, or the next entry would not fit
            next_size = size_of.get(bulk.last_seq + 1, 0)
            assert (
                len(bulk.entries) == max_sessions
                or bulk.size >= max_bytes
                or bulk.size + next_size > max_bytes
            )


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
    max_sessions=st.integers(min_value=1, max_value=6),
    max_bytes=st.integers(min_value=1, max_value=200),
)
def test_offering_reads_whole_makes_the_bulks_of_offering_one_at_a_time(
    sizes: list[int], cuts: list[int], max_sessions: int, max_bytes: int
) -> None:
    """The exporter offers each read of the log at once: the bulks, and what stays pending, are
    those of the same sessions offered one by one, wherever the reads begin and end."""
    tuning = ExportTuning(flushMaxSessions=max_sessions, flushMaxBytes=max_bytes)
    one_by_one = feed(Batcher(tuning), sizes)
    whole, groups = Batcher(tuning), []
    bounds = sorted({0, len(sizes), *(c for c in cuts if c <= len(sizes))})
    for start, end in itertools.pairwise(bounds):
        reads = [entry(seq) for seq in range(start + 1, end + 1)]
        groups += [seqs(bulk) for bulk in whole.offer_all(reads, sizes[start:end])]
    if whole.pending:
        groups.append(seqs(whole.take()))
    assert groups == one_by_one
