"""The export health page: per export its state and counts (refreshed in place every few seconds),
a chart of the last hour, open alerts, and dead letters with replay buttons."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionexport.clock import now_ms
from sessionexport.export.config import ExportConfig, export_config
from sessionexport.export.deadletters import discard_pending, letters_to_replay
from sessionexport.export.status import ExportHealth, export_health, export_running
from sessionexport.export.supervisor import DeliveryRefused
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.store.records import MINUTE_MS, DeadLetter, SettingsRecord
from sessionexport.tokens import Scope
from sessionexport.web.app import Ui, Visit, stored_id
from sessionexport.web.filters import export_names

HOUR_MS = 3600 * 1000
LETTERS_SHOWN = 50


def routes(ui: Ui) -> list[Route]:
    read = (Scope.SETTINGS_READ,)
    return [
        Route("/health", ui.page(health_page, scopes=read), methods=["GET"]),
        Route("/health/{object_id}/stats", ui.page(health_stats, scopes=read), methods=["GET"]),
        Route("/health/{object_id}/series", ui.page(delivery_series, scopes=read), methods=["GET"]),
        Route(
            "/health/{object_id}/replay",
            ui.page(replay, scopes=(*read, Scope.EXPORTS_MANAGE)),
            methods=["POST"],
        ),
        Route(
            "/health/{object_id}/discard",
            ui.page(discard, scopes=(*read, Scope.EXPORTS_MANAGE)),
            methods=["POST"],
        ),
    ]


@dataclass
class ExportView:
    config: ExportConfig
    health: ExportHealth
    letters: list[DeadLetter]
    name: str = ""
    older: bool = False  # pending letters older than those shown


async def health_page(ui: Ui, request: Request, visit: Visit) -> Response:
    # ?export=<id>&before=<letter id>: that export's older dead letters (the newest 50 come first)
    paged = request.query_params.get("export"), stored_id(request.query_params.get("before", ""))
    exports = await _exports(ui, with_letters=True, paged=paged)
    return ui.render(request, visit, "health.html", exports=exports)


async def health_stats(ui: Ui, request: Request, visit: Visit) -> Response:
    """One export's numbers: the part of the page that htmx refreshes in place."""
    record = await ui.settings.get_export(request.path_params["object_id"])
    if record is None:
        return Response(status_code=286)  # htmx: stop polling (the export was deleted)
    view = await _view(ui, record, with_letters=False)
    return ui.render(request, visit, "_health_stats.html", h=view.health)


async def delivery_series(ui: Ui, request: Request, visit: Visit) -> Response:
    """Sessions delivered and failed per minute over the last hour, for the chart (epoch seconds)."""
    now = now_ms()
    first = (now - HOUR_MS) // MINUTE_MS * MINUTE_MS
    counts = {m.minute: m for m in await ui.store.delivery_history(request.path_params["object_id"], first)}
    minutes = range(first, now + 1, MINUTE_MS)
    return JSONResponse(
        {
            "t": [m // 1000 for m in minutes],
            "delivered": [counts[m].delivered if m in counts else 0 for m in minutes],
            "failed": [counts[m].failed if m in counts else 0 for m in minutes],
        }
    )


async def replay(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params["object_id"]
    record = await ui.settings.get_export(object_id)
    if record is None:
        visit.session.say("That export no longer exists.")
        return ui.redirect("/health")
    letter = visit.field("letter").strip()  # empty: every pending one
    letter_id = stored_id(letter)
    letters: list[int] = []
    missing: list[int] = []
    if not letter or letter_id is not None:  # not an id at all: nothing to replay
        wanted = [letter_id] if letter_id is not None else None
        letters, missing = await letters_to_replay(ui.store, object_id, wanted)
    if missing or not letters:
        visit.session.say(
            "Nothing to replay: the dead letter was replayed already, or there is none pending."
        )
        return ui.redirect(f"/health#health-{object_id}")
    config = export_config(object_id, ui.settings.plain_value(record))
    try:
        if len(letters) > 1:  # all of them: may take minutes, so not in this request
            ui.exports.replay_in_background(config, letters)
            visit.session.say(
                f"Replaying {len(letters)} dead letters: each leaves this list once delivered;"
                " one that fails again shows the new reason."
            )
            return ui.redirect(f"/health#health-{object_id}")
        results = await ui.exports.replay(config, letters)
    except DeliveryRefused as exc:
        visit.session.say(f"Not replayed: {exc}")
        return ui.redirect(f"/health#health-{object_id}")
    sent = [r for r in results if not r.skipped]
    delivered = sum(r.delivered for r in sent)
    failed = [r for r in sent if not r.delivered]
    message = f"Replayed {delivered} of {len(sent)} dead letter(s)."
    if failed:
        message += f" Still failing: {failed[0].outcome.alert_title}."
    if skipped := len(results) - len(sent):
        message += f" {skipped} not sent: another replay was sending it, or it was no longer pending."
    visit.session.say(message)
    return ui.redirect(f"/health#health-{object_id}")


async def discard(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params["object_id"]
    if await ui.settings.get_export(object_id) is None:
        visit.session.say("That export no longer exists.")
        return ui.redirect("/health")
    letters, sessions = await discard_pending(ui.store, object_id, now_ms(), f"UI login {visit.author!r}")
    visit.session.say(f"Discarded {letters} dead letter(s) holding {sessions} session(s).")
    return ui.redirect(f"/health#health-{object_id}")


async def _exports(
    ui: Ui, *, with_letters: bool, paged: tuple[str | None, int | None] = (None, None)
) -> list[ExportView]:
    records = await ui.settings.all(EXPORT_SCHEMA)
    names = export_names([(r.object_id, ui.settings.masked_value(r)) for r in records])
    views = [
        await _view(ui, r, with_letters=with_letters, before=paged[1] if r.object_id == paged[0] else None)
        for r in records
    ]
    for view in views:
        view.name = names[view.config.export_id]
    return views


async def _view(
    ui: Ui, record: SettingsRecord, *, with_letters: bool, before: int | None = None
) -> ExportView:
    config = export_config(record.object_id, ui.settings.masked_value(record))  # no secret needed
    running = await export_running(
        ui.store, ui.exports if ui.config.run_exporters else None, record.object_id
    )
    letters = (
        await ui.store.list_dead_letters(
            record.object_id, state="pending", limit=LETTERS_SHOWN + 1, before_id=before
        )
        if with_letters
        else []
    )
    health = await export_health(ui.store, config, running, now_ms())
    return ExportView(config, health, letters[:LETTERS_SHOWN], older=len(letters) > LETTERS_SHOWN)
