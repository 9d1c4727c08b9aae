"""The user session exports page: the configurations, each in a form generated from the schema;
add, edit, pause/resume, delete; test export, sample data and mapping downloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sessionexport.api.rendering import download
from sessionexport.clock import now_ms
from sessionexport.export.preview import (
    NoSessions,
    mapping_of,
    preview_sessions,
    run_test_export,
    sample_body,
    unsaved_config,
)
from sessionexport.settings.objects import ItemResult, invalid, update_token
from sessionexport.settings.schemas import EXPORT_SCHEMA, EXPORT_SETTINGS, MAX_EXPORTS, ZONE_SCHEMA
from sessionexport.store.records import SettingsRecord
from sessionexport.tokens import Scope
from sessionexport.web.app import Ui, Visit
from sessionexport.web.forms import NEW, ObjectForm, build_form, field_labels, object_form, value_from_form


def routes(ui: Ui) -> list[Route]:
    read, write = (Scope.SETTINGS_READ,), (Scope.SETTINGS_READ, Scope.SETTINGS_WRITE)
    return [
        Route("/exports", ui.page(list_exports, scopes=read), methods=["GET"]),
        Route("/exports", ui.page(save_export, scopes=write), methods=["POST"]),
        Route(
            "/exports/test",
            ui.page(test_export, scopes=(Scope.EXPORTS_MANAGE, Scope.SESSIONS_READ)),
            methods=["POST"],
        ),
        Route(
            "/exports/sample", ui.page(download_sample, scopes=(*read, Scope.SESSIONS_READ)), methods=["POST"]
        ),
        Route("/exports/mapping", ui.page(download_mapping, scopes=read), methods=["POST"]),
        Route("/exports/{object_id}", ui.page(save_export, scopes=write), methods=["POST"]),
        Route("/exports/{object_id}/enabled", ui.page(set_enabled, scopes=write), methods=["POST"]),
        Route("/exports/{object_id}/delete", ui.page(delete_export, scopes=write), methods=["POST"]),
    ]


_LABELS = field_labels(build_form(EXPORT_SETTINGS, None))  # a refused test names fields as the form does


@dataclass
class ExportForm(ObjectForm):
    enabled: bool = True
    not_done: str = "saved"  # what its refusal did not do: "saved", or "downloaded"


async def list_exports(ui: Ui, request: Request, visit: Visit) -> Response:
    return await _page(ui, request, visit)


async def save_export(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params.get("object_id", NEW)
    value, result = await ui.save(visit, EXPORT_SETTINGS, object_id)
    if overtaken := ui.overtaken_save(visit, result, "export", f"/exports#export-{object_id}"):
        return overtaken
    if not result.ok:
        return await _page(ui, request, visit, object_id, value, result)
    if object_id == NEW:
        visit.session.say("Export added. Its exporter starts from now; the health page shows its deliveries.")
    else:
        visit.session.say("Export saved.")
    return ui.redirect(f"/exports#export-{result.object_id}")


async def set_enabled(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params["object_id"]
    record = await ui.settings.get_export(object_id)
    if record is None:
        return _gone(ui, visit)
    value = ui.settings.masked_value(record)  # masked secrets are kept as stored
    enabled = visit.field("enabled") == "true"
    value["endpointDefinition"]["enableUserSessionExport"] = enabled
    result = await ui.settings.update(object_id, value, update_token(record), visit.author, now_ms())
    visit.session.say(
        (
            "Export resumed: it continues from where it paused."
            if enabled
            else "Export paused; its position is kept."
        )
        if result.ok
        else ui.overtaken_change(result, "export", "changed") or f"Not changed: {_message(result)}"
    )
    return ui.redirect(f"/exports#export-{object_id}")


async def delete_export(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params["object_id"]
    result = await ui.settings.delete(object_id, visit.field("updateToken") or None, schema_id=EXPORT_SCHEMA)
    visit.session.say(
        "Export deleted."
        if result.ok
        else ui.overtaken_change(result, "export", "deleted") or f"Not deleted: {_message(result)}"
    )
    return ui.redirect("/exports")


async def test_export(ui: Ui, request: Request, visit: Visit) -> Response:
    """A fragment (htmx) with the outcome of sending the form's configuration once. A saved
    export's secrets must be entered again: the service says so (they are never sent back)."""
    value = _submitted(visit)
    config, violations = await unsaved_config(ui.settings, value, secrets_needed=True)
    context: dict[str, Any] = {"violations": violations, "result": None, "problem": None, "labels": _LABELS}
    if config is not None:
        try:
            entries = await preview_sessions(ui.store, ui.settings, config, now_ms())
        except NoSessions as exc:
            context["problem"] = str(exc)
        else:
            async with ui.exports.client() as client:
                context["result"] = await run_test_export(ui.exports.sender(config, client), entries)
    return ui.render(request, visit, "_test_result.html", **context)


async def download_sample(ui: Ui, request: Request, visit: Visit) -> Response:
    value = _submitted(visit)
    config, violations = await unsaved_config(ui.settings, value, secrets_needed=False)
    if config is None:
        return await _page(ui, request, visit, _form_id(visit), value, invalid(violations), "downloaded")
    try:
        entries = await preview_sessions(ui.store, ui.settings, config, now_ms())
    except NoSessions as exc:
        visit.session.say(str(exc))
        return await _page(ui, request, visit, _form_id(visit), value)  # the form as it was filled in
    return await download(request, sample_body(config, entries), "application/x-ndjson", "sample.ndjson")


async def download_mapping(ui: Ui, request: Request, visit: Visit) -> Response:
    value = _submitted(visit)
    config, violations = await unsaved_config(ui.settings, value, secrets_needed=False)
    if config is None:
        return await _page(ui, request, visit, _form_id(visit), value, invalid(violations), "downloaded")
    body = orjson.dumps(mapping_of(config), option=orjson.OPT_INDENT_2)
    return await download(request, body, "application/json", "mapping.json")


# -- the page --------------------------------------------------------------------------------------
async def _page(
    ui: Ui,
    request: Request,
    visit: Visit,
    editing: str | None = None,
    submitted: dict[str, Any] | None = None,
    result: ItemResult | None = None,
    not_done: str = "saved",
) -> Response:
    zones = [
        (z.object_id, str(orjson.loads(z.value).get("name", ""))) for z in await ui.settings.all(ZONE_SCHEMA)
    ]
    records = await ui.settings.all(EXPORT_SCHEMA)
    names = ui.export_names(records)
    forms = [
        _saved_form(ui, r, names[r.object_id], zones, submitted if r.object_id == editing else None, result)
        for r in records
    ]
    new = None
    if len(records) < MAX_EXPORTS or editing == NEW:  # refused for the limit (met meanwhile): says so
        mine = editing == NEW
        new = _form(NEW, "Add an export", submitted if mine else None, zones, result if mine else None)
        new.open = mine
    for form in [*forms, *([new] if new else [])]:
        form.not_done = not_done
    return ui.render(
        request,
        visit,
        "exports.html",
        status=result.code if result is not None and editing is not None else 200,
        forms=forms,
        new=new,
        max_exports=MAX_EXPORTS,
        zones=zones,
    )


def _saved_form(
    ui: Ui,
    record: SettingsRecord,
    name: str,
    zones: list[tuple[str, str]],
    submitted: dict[str, Any] | None,
    result: ItemResult | None,
) -> ExportForm:
    stored = ui.settings.masked_value(record)
    form = _form(
        record.object_id,
        name,
        submitted or stored,
        zones,
        result if submitted is not None else None,
    )
    form.update_token = update_token(record)
    form.enabled = stored["endpointDefinition"]["enableUserSessionExport"]
    form.open = submitted is not None
    return form


def _form(
    object_id: str,
    title: str,
    value: dict[str, Any] | None,
    zones: list[tuple[str, str]],
    result: ItemResult | None,
) -> ExportForm:
    return object_form(ExportForm, EXPORT_SETTINGS, object_id, title, value, result, zones)


def _form_id(visit: Visit) -> str:
    return visit.field("objectId") or NEW


def _submitted(visit: Visit) -> dict[str, Any]:
    """The form's value; a saved export's secrets left empty stay stored (and shown so again)."""
    return value_from_form(EXPORT_SETTINGS, visit.values(), keep_secrets=_form_id(visit) != NEW)


def _gone(ui: Ui, visit: Visit) -> Response:
    visit.session.say("That export no longer exists.")
    return ui.redirect("/exports")


def _message(result: ItemResult) -> str:
    details = "; ".join(f"{v.path}: {v.message}" if v.path else v.message for v in result.violations)
    return details or result.message or f"error {result.code}"
