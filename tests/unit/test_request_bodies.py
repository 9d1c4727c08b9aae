"""Large request bodies are parsed off the event loop; small ones on it (a thread costs more)."""

from __future__ import annotations

import threading

from sessionexport.request_bodies import OFF_LOOP_BYTES, parse_off_loop


def where_parsed(body: bytes) -> int:
    return threading.get_ident()


async def test_a_large_body_is_parsed_in_another_thread() -> None:
    assert await parse_off_loop(where_parsed, b"x" * OFF_LOOP_BYTES) != threading.get_ident()


async def test_a_small_body_is_parsed_right_here() -> None:
    assert await parse_off_loop(where_parsed, b"x" * (OFF_LOOP_BYTES - 1)) == threading.get_ident()


async def test_a_parse_error_reaches_the_caller_from_either_place() -> None:
    def refuse(body: bytes) -> None:
        raise ValueError(len(body))

    for size in (10, OFF_LOOP_BYTES * 2):
        try:
            await parse_off_loop(refuse, b"x" * size)
        except ValueError as exc:
            assert exc.args == (size,)
        else:
            raise AssertionError("the error was lost")
