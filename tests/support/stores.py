"""Opening and closing a store (of either kind) around a test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar


class _Openable(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...


S = TypeVar("S", bound=_Openable)


@asynccontextmanager
async def opened(new: Callable[[], S]) -> AsyncIterator[S]:
    store = new()
    await store.open()
    try:
        yield store
    finally:
        await store.close()
