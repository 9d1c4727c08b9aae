"""A recurring failure is said at most once a period, with how often it recurred meanwhile."""

from __future__ import annotations

import logging

import pytest

from sessionexport.store.postgresql_database import PoolWarnings
from sessionexport.throttle import Throttle, recurring


def test_the_first_occurrence_is_said_then_at_most_once_a_period() -> None:
    now = [100.0]
    throttle = Throttle(60, clock=lambda: now[0])
    assert throttle.allows() == 0
    assert [throttle.allows() for _ in range(3)] == [None, None, None]
    now[0] += 59.9
    assert throttle.allows() is None
    now[0] += 0.1
    assert throttle.allows() == 4  # kept quiet four times since
    assert throttle.allows() is None
    now[0] += 600
    assert throttle.allows() == 1


def test_what_a_message_gets_added() -> None:
    assert recurring(0) == ""
    assert recurring(4) == " (and 4 more time(s) since it was last said)"


def test_a_success_ends_the_streak_so_the_next_failure_is_said_at_once() -> None:
    now = [0.0]
    throttle = Throttle(60, clock=lambda: now[0])
    assert throttle.reset() is False  # nothing was failing
    assert throttle.allows() == 0
    assert throttle.allows() is None
    assert throttle.reset() is True  # worth saying that it works again
    assert throttle.allows() == 0  # a new streak is said at once


def test_the_database_pool_s_warnings_are_said_once_a_minute_at_most(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """psycopg_pool warns of each failed reconnection, every second or two through an outage."""
    pool_log = logging.getLogger("psycopg.pool")
    assert any(isinstance(f, PoolWarnings) for f in pool_log.filters)  # installed with the store
    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        for attempt in range(5):
            pool_log.warning("error connecting in %r: test outage %s", "pool-test", attempt)
        pool_log.warning("another test warning: %s", "said")  # another warning: said too
    said = [r.getMessage() for r in caplog.records if r.name == "psycopg.pool"]
    assert said == ["error connecting in 'pool-test': test outage 0", "another test warning: said"]
