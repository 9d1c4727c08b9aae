"""The export health page: per export its state and counts (refreshed in place every few seconds),
a chart of the last hour, open alerts, and dead letters with replay buttons."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sessionexport.clock import HOUR_MS, MINUTE_MS, now_ms
from sessionexport.export.config import export_config
from sessionexport.export.deadletters import discard_pending, letters_to_replay
from sessionexport.export.replay import DeliveryRefused, ReplayTally
from sessionexport.export.status import ExportHealth, export_health, export_running
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.store.records import ListedDeadLetter, SettingsRecord
from sessionexport.tokens import Scope
from sessionexport.web.app import Ui, Visit, stored_id

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
    name: str
    health: ExportHealth
    letters: list[ListedDeadLetter]  # pending, newest first, a page of them
    older: bool  # pending letters older than those shown
    newest: int  # the newest pending letter's id: "all" in a button means up to it, not what came since


async def health_page(ui: Ui, request: Request, visit: Visit) -> Response:
    # ?export=<id>&before=<letter id>: that export's dead letters older than that one (the newest
    # 50 come first)
    before = {request.query_params.get("export"): stored_id(request.query_params.get("before", ""))}
    records = await ui.settings.all(EXPORT_SCHEMA)
    names = ui.export_names(records)
    exports = [await _view(ui, r, names[r.object_id], before.get(r.object_id)) for r in records]
    places = [card(r.object_id) for r in records]
    return ui.render(request, visit, "health.html", places=places, exports=exports)


async def health_stats(ui: Ui, request: Request, visit: Visit) -> Response:
    """One export's numbers: the part of the page that htmx refreshes in place."""
    record = await ui.settings.get_export(request.path_params["object_id"])
    if record is None:
        return Response(status_code=286)  # htmx: stop polling (the export was deleted)
    return ui.render(request, visit, "_health_stats.html", h=await _health(ui, record))


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
    if await ui.settings.get_export(object_id) is None:
        return _gone(ui, visit)
    letter = visit.field("letter").strip()  # empty: every pending one
    letter_id = stored_id(letter)
    letters: list[int] = []
    missing: list[int] = []
    if letter_id is not None:
        letters, missing = await letters_to_replay(ui.store, object_id, [letter_id])
    elif not letter:
        if (up_to := stored_id(visit.field("up_to").strip())) is None:
            return _back(ui, visit, object_id, _out_of_date("replay"))
        letters, missing = await letters_to_replay(ui.store, object_id, None, up_to)
    if missing or not letters:
        return _back(
            ui,
            visit,
            object_id,
            "Nothing to replay: the dead letter was replayed already, or there is none pending.",
        )
    try:
        if (config := await ui.exports.sending_config(object_id)) is None:  # deleted meanwhile
            return _gone(ui, visit)
        if len(letters) > 1:  # all of them: may take minutes, so not in this request
            ui.exports.replay_in_background(config, letters)
            return _back(
                ui,
                visit,
                object_id,
                f"Replaying {len(letters)} dead letters in the background: the count above follows"
                " them; reload the page to see which are left (one that failed again shows the new"
                " reason).",
            )
        results = await ui.exports.replay(config, letters)
    except DeliveryRefused as exc:
        return _back(ui, visit, object_id, f"Not replayed: {exc}")
    tally = ReplayTally.of(results)
    message = f"Replayed {tally.delivered} of {len(tally.sent)} dead letter(s)."
    if tally.failed:
        message += f" Still failing: {tally.failed[0].outcome.alert_title}."
    if tally.skipped:
        message += (
            f" {len(tally.skipped)} not sent: another replay was sending it, or it was no longer pending."
        )
    return _back(ui, visit, object_id, message)


async def discard(ui: Ui, request: Request, visit: Visit) -> Response:
    object_id = request.path_params["object_id"]
    if await ui.settings.get_export(object_id) is None:
        return _gone(ui, visit)
    # "all" in the page's buttons means up to the newest letter it counted, not the letters kept since
    if (up_to := stored_id(visit.field("up_to").strip())) is None:
        return _back(ui, visit, object_id, _out_of_date("discard"))
    letters, sessions = await discard_pending(
        ui.store, object_id, now_ms(), f"UI login {visit.author!r}", up_to
    )
    return _back(ui, visit, object_id, f"Discarded {letters} dead letter(s) holding {sessions} session(s).")


def _gone(ui: Ui, visit: Visit) -> Response:
    visit.session.say("That export no longer exists.")
    return ui.redirect("/health")


def card(object_id: str) -> str:
    """The id of an export's part of the health page."""
    return f"health-{object_id}"


def _back(ui: Ui, visit: Visit, object_id: str, message: str) -> Response:
    """Back to the export's part of the health page, with ``message`` in it: at the top of the
    page, the message would be out of sight of the button that was pressed."""
    visit.session.say(message, at=card(object_id))
    return ui.redirect(f"/health#{card(object_id)}")


def _out_of_date(action: str) -> str:
    """For a form without the newest letter its page counted (a page from an older server)."""
    return f"The page was out of date: read the dead letters again, then {action} them."


async def _health(ui: Ui, record: SettingsRecord) -> ExportHealth:
    config = export_config(record.object_id, ui.settings.masked_value(record))  # no secret needed
    running = await export_running(
        ui.store, ui.exports if ui.config.run_exporters else None, record.object_id
    )
    return await export_health(ui.store, config, running, now_ms())


async def _view(ui: Ui, record: SettingsRecord, name: str, before: int | None) -> ExportView:
    letters = await ui.store.list_dead_letters(
        record.object_id, state="pending", limit=LETTERS_SHOWN + 1, before_id=before
    )
    newest = (
        letters
        if before is None
        else await ui.store.list_dead_letters(record.object_id, state="pending", limit=1)
    )
    health = await _health(ui, record)
    return ExportView(
        name,
        health,
        letters[:LETTERS_SHOWN],
        older=len(letters) > LETTERS_SHOWN,
        newest=newest[0].id if newest else 0,
    )
