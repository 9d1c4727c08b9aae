"""Export state in a process that runs no exporters (``serve --no-exporters``): told by the leases
that workers hold in the shared store."""

from __future__ import annotations

import pytest

from sessionexport.clock import now_ms
from sessionexport.store.records import BulkDecision, Claim
from tests.conftest import Api
from tests.integration.test_api_settings import export_value
from tests.integration.test_store_backends import sessions

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)
SCHEMA = "builtin:elasticsearch.user-session-export-settings-v2"


async def create_export(api: Api, token: str) -> str:
    created = await api.client.post(
        "/api/v2/settings/objects",
        json=[{"schemaId": SCHEMA, "scope": "environment", "value": export_value()}],
        headers=api.auth(token),
    )
    return str(created.json()[0]["objectId"])


async def test_without_exporters_here_the_state_follows_the_workers_leases(api: Api) -> None:
    token = await api.token()
    export_id = await create_export(api, token)

    async def state() -> str:
        status = await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))
        return str(status.json()["state"])

    assert await state() == "stopped"  # no worker exports it
    assert await api.store.claim_lease(export_id, 0, "worker-elsewhere", lease_ms=60_000)
    assert await state() == "running"
    await api.store.release_lease(export_id, 0, "worker-elsewhere")
    assert await state() == "stopped"


async def test_an_export_no_exporter_ran_for_yet_counts_what_it_is_owed(api: Api) -> None:
    """No cursor yet (only processes without exporters ran): its backlog is what joined the log
    once it was created, not 0 ("caught up")."""
    token = await api.token()
    await api.store.append_sessions(sessions(3, "before"), received_at=now_ms() - 60_000)
    export_id = await create_export(api, token)
    await api.store.append_sessions(sessions(2, "after"), received_at=now_ms() + 1)
    status = (await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))).json()
    assert (status["position"], status["backlog"]) == (None, 2)
    assert status["lagSeconds"] is not None


async def test_sessions_stamped_ahead_of_this_clock_are_no_negative_lag(api: Api) -> None:
    """Joined by a host whose clock is ahead (or before this one was stepped back): they have
    waited no time yet, which a `lag > 300` alert must still read as a number."""
    token = await api.token()
    export_id = await create_export(api, token)
    await api.store.append_sessions(sessions(2, "ahead"), received_at=now_ms() + 3_600_000)
    status = (await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))).json()
    assert (status["backlog"], status["lagSeconds"]) == (2, 0)


async def test_an_export_in_shards_counts_each_shards_own_backlog(api: Api) -> None:
    token = await api.token()
    export_id = await create_export(api, token)
    await api.store.append_sessions(sessions(4, "old"), received_at=now_ms() - 60_000)
    await api.store.append_sessions(sessions(4, "new"), received_at=now_ms() - 1_000)
    seqs = [e.seq for e in await api.store.read_log(0, 100)]
    claims = [Claim(export_id, shard, 2, "worker-elsewhere") for shard in (0, 1)]
    for claim in claims:
        assert await api.store.claim_lease(export_id, claim.shard, claim.owner, lease_ms=60_000)
        assert await api.store.start_shard(claim, 0, now_ms()) == 0
    fast = [seq for seq in seqs if seq % 2 == 0]  # shard 0 decided all of its sessions
    await api.store.record_bulk(claims[0], seqs[-1], BulkDecision(delivered=len(fast)), now_ms())

    status = (await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))).json()
    assert status["position"] == 0  # decided up to there: the slow shard has decided nothing
    assert status["backlog"] == len(seqs) - len(fast)  # what shard 1 has left, not the whole log
    assert 55 < status["lagSeconds"] < 120  # its oldest session waits since about a minute
    await api.store.record_bulk(claims[1], seqs[-1], BulkDecision(delivered=len(seqs) - len(fast)), now_ms())
    status = (await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))).json()
    assert (status["backlog"], status["lagSeconds"]) == (0, None)


async def test_the_status_is_what_the_openapi_document_says(api: Api) -> None:
    """Every field the status route returns is in its documented schema, and every documented one
    is returned (the route answers with its own JSON, not through the model)."""
    token = await api.token()
    export_id = await create_export(api, token)
    status = await api.client.get(f"/api/v2/exports/{export_id}/status", headers=api.auth(token))
    document = (await api.client.get("/openapi.json")).json()
    schema = document["components"]["schemas"]["ExportStatus"]
    assert set(status.json()) == set(schema["properties"])
