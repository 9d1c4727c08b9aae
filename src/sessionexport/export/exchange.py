"""One HTTP exchange with an endpoint, read within bounds.

An endpoint may answer with anything, of any size, as slowly as it likes: the answer is read only
up to what the caller needs of it (a reason, Elasticsearch's items, a token), and the caller puts
a deadline on the whole exchange.
"""

from __future__ import annotations

import httpx


async def exchange(
    client: httpx.AsyncClient, request: httpx.Request, limit: int
) -> tuple[httpx.Response, bytes]:
    """The response, and at most ``limit`` bytes of its (decoded) answer; what is left unread
    closes the connection rather than returning it to the pool."""
    response = await client.send(request, stream=True)
    try:
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        return response, b"".join(chunks)[:limit]
    finally:
        await response.aclose()
