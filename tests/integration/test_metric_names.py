"""Every metric the README and the shipped alerting rules (deploy/prometheus-alerts.yml) name is one
that a /metrics really serves (the server's, or the receiver's): a renamed metric cannot leave them
silently alerting on nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sessionexport.receiver.app import ReceiverOptions, create_receiver_app
from tests.integration.test_export_engine import delivered, engine, receiver, tls
from tests.support.engine import Engine, export_value, sessions, until
from tests.support.receiver import Receiver

__all__ = ["engine", "receiver", "tls"]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus-alerts.yml"
METRIC = re.compile(r"\bsessionexport_[a-z_]+")
DURATION = re.compile(r"^\d+[smhd]$")


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


async def served_names(engine: Engine, receiver: Receiver, data_dir: Path) -> set[str]:
    """The sample names of a server that has delivered to an export (so that every series
    exists), and of the receiver toolkit's app."""
    export_id = await engine.create_export(export_value(receiver.url))
    await engine.ingest(sessions(3))
    await until(lambda: delivered(engine, export_id, 3), "delivered")
    served = (await engine.client.get("/metrics", headers=engine.headers)).text
    app = create_receiver_app(ReceiverOptions(data_dir=str(data_dir)).build())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://r") as client,
    ):
        received = (await client.get("/metrics")).text
    families = [family for text in (served, received) for family in text_string_to_metric_families(text)]
    histograms = {family.name for family in families if family.type == "histogram"}  # named as a whole
    return histograms | {sample.name for family in families for sample in family.samples}


def test_every_rule_is_complete() -> None:
    loaded = rules()
    assert loaded
    for rule in loaded:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"SessionExport[A-Za-z]+", rule["alert"]), rule["alert"]
        assert DURATION.match(rule["for"]), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["expr"]
        assert METRIC.search(rule["expr"]) or rule["expr"].startswith('up{job="sessionexport"}'), rule["expr"]


@pytest.mark.parametrize("where", ["README.md", "deploy/prometheus-alerts.yml"])
async def test_every_metric_named_is_served(
    engine: Engine, receiver: Receiver, where: str, tmp_path: Path
) -> None:
    named = set(METRIC.findall((ROOT / where).read_text()))
    assert named
    missing = named - await served_names(engine, receiver, tmp_path / "received")
    assert not missing, f"{where} names metrics /metrics does not serve: {sorted(missing)}"
