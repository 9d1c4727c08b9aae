"""How the UI names exports (no I/O)."""

from __future__ import annotations

from typing import Any

from sessionexport.web.filters import export_names

URL = "https://collector.example/sessions"
BULK = "https://es.example:9200/_bulk"


def value(url: str, index: str | None = None) -> dict[str, Any]:
    direct = {"active": True, "indexName": index} if index else {"active": False}
    return {"endpointDefinition": {"endpointUrl": url}, "sendDirect": direct}


def test_an_export_is_named_by_its_url_and_elasticsearch_index() -> None:
    names = export_names([("id-aaaaaa", value(URL)), ("id-bbbbbb", value(BULK, "web"))])
    assert names == {"id-aaaaaa": URL, "id-bbbbbb": f"{BULK} → index web"}


def test_exports_named_alike_get_the_end_of_their_ids() -> None:
    names = export_names([("x-111111", value(URL)), ("x-222222", value(URL)), ("x-333333", value(BULK, "w"))])
    assert names == {
        "x-111111": f"{URL} · …111111",
        "x-222222": f"{URL} · …222222",
        "x-333333": f"{BULK} → index w",
    }
