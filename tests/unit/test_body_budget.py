"""The ingest routes' budget of request-body bytes: reservations fit, wait for room, or give up."""

from __future__ import annotations

import asyncio

import pytest

from sessionexport.request_bodies import BodyBudget, Busy


async def test_reservations_that_fit_go_together_and_are_given_back() -> None:
    budget = BodyBudget(100, wait_seconds=1)
    async with budget.reserve(60), budget.reserve(40):
        assert budget.used == 100
    assert budget.used == 0


async def test_one_that_does_not_fit_waits_for_room() -> None:
    budget = BodyBudget(100, wait_seconds=5)
    held, entered = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with budget.reserve(80):
            await held.wait()

    async def second() -> None:
        async with budget.reserve(30):
            entered.set()

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    await asyncio.sleep(0.05)
    assert not entered.is_set() and budget.used == 80
    held.set()
    await asyncio.gather(*tasks)
    assert entered.is_set() and budget.used == 0


async def test_one_that_finds_no_room_within_the_wait_is_refused() -> None:
    budget = BodyBudget(100, wait_seconds=0.05)
    async with budget.reserve(100):
        with pytest.raises(Busy, match="100 of 100 bytes"):
            async with budget.reserve(1):
                raise AssertionError("no room was made")
    assert budget.used == 0


async def test_a_body_larger_than_the_budget_takes_all_of_it_and_a_failure_gives_it_back() -> None:
    budget = BodyBudget(100, wait_seconds=0.05)
    with pytest.raises(RuntimeError):
        async with budget.reserve(10_000):
            assert budget.used == 100
            raise RuntimeError("the request failed")
    assert budget.used == 0
