"""The rules of sharing exports between workers: fair shares, claim and hand-over order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sessionexport.export.leases import claim_order, fair_share, to_hand_over, worker_name


def test_shares_split_evenly_the_first_workers_taking_the_remainder() -> None:
    workers = ["a", "b", "c"]
    assert [fair_share(4, workers, w) for w in workers] == [2, 1, 1]
    assert [fair_share(3, workers, w) for w in workers] == [1, 1, 1]
    assert [fair_share(1, workers, w) for w in workers] == [1, 0, 0]


def test_a_worker_not_yet_listed_counts_itself() -> None:
    assert fair_share(4, ["b"], "a") == 2
    assert fair_share(4, [], "a") == 4


@given(st.integers(0, 200), st.sets(st.text(min_size=1, max_size=5), min_size=1, max_size=12))
def test_shares_add_up_to_every_unit_and_differ_by_one_at_most(units: int, names: set[str]) -> None:
    shares = [fair_share(units, sorted(names), name) for name in names]
    assert sum(shares) == units
    assert max(shares) - min(shares) <= 1


def test_claims_spread_over_exports_and_hand_overs_keep_the_first_taken() -> None:
    units = [("e2", 1), ("e1", 0), ("e1", 1), ("e2", 0)]
    assert claim_order(units) == [("e1", 0), ("e2", 0), ("e1", 1), ("e2", 1)]
    assert to_hand_over(units, 3) == [("e2", 1)]
    assert to_hand_over(units, 4) == []
    assert to_hand_over(units, 0) == claim_order(units)


def test_worker_names_are_unique_per_start() -> None:
    assert worker_name() != worker_name()
