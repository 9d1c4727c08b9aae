"""Reading Elasticsearch ``_bulk`` answers item by item. No I/O.

Elasticsearch answers 200 even when items fail; each item has its own ``status`` (and ``error``
with ``type`` and ``reason``), in request order. Items with 429 (the cluster is busy) or a 5xx are
worth sending again; every other failure (400 mapping errors, ...) would fail again, so it is
final. A ``create`` answered 409 means the document is already there: delivered.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from sessionexport.export.answers import said


class BulkResponseError(ValueError):
    """The answer is not a ``_bulk`` response for this request."""


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    status: int
    error_type: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 or (
            self.status == 409 and self.error_type == "version_conflict_engine_exception"
        )

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500

    def describe(self) -> str:
        return f"{self.status} {self.error_type or 'error'}: {self.reason or 'no reason given'}"


class _Error(msgspec.Struct):
    type: str | None = None
    reason: str | None = None


class _Item(msgspec.Struct):
    status: int
    error: _Error | str | None = None


class _Response(msgspec.Struct):
    items: list[dict[str, _Item]]
    errors: bool = False


_decoder = msgspec.json.Decoder(_Response)


def item_outcomes(answer: bytes, expected: int, secrets: tuple[str, ...] = ()) -> list[ItemOutcome]:
    """One outcome per document sent, in order, ``secrets`` masked in their reasons (an endpoint
    may echo credentials); raise BulkResponseError for anything else."""
    if not answer.strip():
        raise BulkResponseError("not an Elasticsearch bulk response: the answer is empty")
    try:
        response = _decoder.decode(answer)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BulkResponseError(f"not an Elasticsearch bulk response: {exc}") from None
    if len(response.items) != expected:
        raise BulkResponseError(
            f"the bulk response has {len(response.items)} item(s) for {expected} document(s)"
        )
    outcomes = []
    for entry in response.items:
        if len(entry) != 1:
            raise BulkResponseError("a bulk response item must hold exactly one action")
        item = next(iter(entry.values()))
        outcomes.append(_outcome(item, secrets))
    return outcomes


def _outcome(item: _Item, secrets: tuple[str, ...]) -> ItemOutcome:
    if isinstance(item.error, _Error):
        kind, reason = item.error.type, item.error.reason
    else:
        kind, reason = None, item.error
    return ItemOutcome(item.status, said(kind, secrets), said(reason, secrets))
