"""The management zones page: list, add, edit, delete, with how many recent sessions each matches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessionexport.clock import now_ms
from sessionexport.export.zones import Zone, zone_from_value
from sessionexport.settings.objects import ItemResult, update_token
from sessionexport.settings.schemas import ZONE_SCHEMA, ZONE_SETTINGS
from sessionexport.store import Store
from sessionexport.store.records import LogEntry
from sessionexport.tokens import Scope
from sessionexport.web.app import Ui, Visit
from sessionexport.web.forms import NEW, ObjectForm, object_form

RECENT_MS = 24 * 3600 * 1000
RECENT_LIMIT = 5000  # the newest sessions of the last day that the counts look at
_PAGE = 1000


def routes(ui: Ui) -> list[Route]:
    read, write = (Scope.SETTINGS_READ,), (Scope.SETTINGS_READ, Scope.SETTINGS_WRITE)
    return [
        Route("/zones", ui.page(list_zones, scopes=read), methods=["GET"]),
        Route("/zones", ui.page(save_zone, scopes=write), methods=["POST"]),
        Route("/zones/{object_id}", ui.page(save_zone, scopes=write), methods=["POST"]),
        Route("/zones/{object_id}/delete", ui.page(delete_zone, scopes=write), methods=["POST"]),
    ]


@dataclass
class ZoneForm(ObjectForm):
    rules: list[dict[str, Any]] = field(default_factory=list)
    matches: int | None = None


async def list_zones(ui: Ui, request: Request, visit: Visit) -> Response:
    return await _page(ui, request, visit)


async def save_zone(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params.get("object_id", NEW)
    value, result = await ui.save(visit, ZONE_SETTINGS, object_id)
    if overtaken := ui.overtaken_save(visit, result, "management zone", f"/zones#zone-{object_id}"):
        return overtaken
    if not result.ok:
        return await _page(ui, request, visit, object_id, value, result)
    verb = "added" if object_id == NEW else "saved"
    visit.session.say(f"Management zone “{value.get('name')}” {verb}.")
    return ui.redirect(f"/zones#zone-{result.object_id}")


async def delete_zone(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id, token = request.path_params["object_id"], visit.field("updateToken") or None
    result = await ui.settings.delete(object_id, token, schema_id=ZONE_SCHEMA)
    visit.session.say(
        "Management zone deleted."
        if result.ok
        else ui.overtaken_change(result, "management zone", "deleted") or f"Not deleted: {result.message}"
    )
    return ui.redirect("/zones")


async def _page(
    ui: Ui,
    request: Request,
    visit: Visit,
    editing: str | None = None,
    submitted: dict[str, Any] | None = None,
    result: ItemResult | None = None,
) -> Response:
    records = await ui.settings.all(ZONE_SCHEMA)
    values = [orjson.loads(r.value) for r in records]
    counts, scanned = await count_matches(ui.store, [zone_from_value(v) for v in values], now_ms())
    forms = []
    for record, value, count in zip(records, values, counts, strict=True):
        mine = record.object_id == editing
        form = _form(
            record.object_id,
            str(value.get("name", "")),
            submitted if mine else value,
            result if mine else None,
        )
        form.update_token, form.rules, form.matches, form.open = (
            update_token(record),
            value.get("rules", []),
            count,
            mine,
        )
        forms.append(form)
    new = _form(
        NEW,
        "Add a management zone",
        submitted if editing == NEW else None,
        result if editing == NEW else None,
    )
    new.open = editing == NEW or not records
    return ui.render(
        request,
        visit,
        "zones.html",
        status=result.code if result is not None else 200,
        forms=forms,
        new=new,
        scanned=scanned,
    )


def _form(object_id: str, title: str, value: dict[str, Any] | None, result: ItemResult | None) -> ZoneForm:
    return object_form(ZoneForm, ZONE_SETTINGS, object_id, title, value, result)


def _matches(zones: list[Zone], entries: list[LogEntry]) -> list[int]:
    return [sum(zone.contains(entry) for entry in entries) for zone in zones]


async def count_matches(store: Store, zones: list[Zone], now: int) -> tuple[list[int], int]:
    """How many of the newest sessions of the last day each zone matches, and how many were looked at."""
    counts = [0] * len(zones)
    scanned = 0
    before: int | None = None
    while zones and scanned < RECENT_LIMIT:
        # Attributes only: the rules never look at a session's body.
        page = await store.recent_log(
            now - RECENT_MS, min(_PAGE, RECENT_LIMIT - scanned), before, bodies=False
        )
        # Matching is CPU work (zones x rules x sessions): off the event loop, so the API keeps answering.
        for i, count in enumerate(await asyncio.to_thread(_matches, zones, page)):
            counts[i] += count
        scanned += len(page)
        if len(page) < _PAGE:
            break
        before = page[-1].seq
    return counts, scanned
