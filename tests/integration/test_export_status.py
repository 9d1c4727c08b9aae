"""Export state in a process that runs no exporters (``serve --no-exporters``): told by the leases
that workers hold in the shared store."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.integration.test_api_settings import export_value

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)
SCHEMA = "builtin:elasticsearch.user-session-export-settings-v2"


async def test_without_exporters_here_the_state_follows_the_workers_leases(api: Api) -> None:
    token = await api.token()
    created = await api.client.post(
        "/api/v2/settings/objects",
        json=[{"schemaId": SCHEMA, "scope": "environment", "value": export_value()}],
        headers=api.auth(token),
    )
    export_id = created.json()[0]["objectId"]

    async def state() -> str:
        status = await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))
        return str(status.json()["state"])

    assert await state() == "stopped"  # no worker exports it
    assert await api.store.claim_lease(export_id, 0, "worker-elsewhere", lease_ms=60_000)
    assert await state() == "running"
    await api.store.release_lease(export_id, 0, "worker-elsewhere")
    assert await state() == "stopped"
