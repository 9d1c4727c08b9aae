"""Secrets at rest: encryption, the key file, and key rotation (service and CLI)."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sessionexport.clock import now_ms
from sessionexport.settings.objects import ItemResult, NewObject, SettingsService
from sessionexport.settings.schemas import EXPORT_SCHEMA
from sessionexport.settings.secrets import MASK, SecretBox, SecretKeyError, load_secret_box, new_key
from sessionexport.store import Store
from sessionexport.store.records import SettingsRecord
from tests.conftest import Api
from tests.integration.test_api_settings import export_value
from tests.integration.test_store_backends import sessions

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

PASSWORD = "correct horse battery staple"


def export_with_password() -> NewObject:
    return NewObject(
        EXPORT_SCHEMA,
        "environment",
        {
            "endpointDefinition": {"endpointUrl": "https://receiver.example/export/events"},
            "authentication": {
                "active": True,
                "authType": "basic",
                "basicAuth": {"username": "u", "password": PASSWORD},
            },
        },
    )


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    box = load_secret_box(tmp_path, None)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = load_secret_box(tmp_path, None)
    assert again.decrypt(box.encrypt("x")) == "x"


def test_environment_keys_win_and_bad_keys_are_refused(tmp_path: Path) -> None:
    key = new_key()
    box = load_secret_box(tmp_path, key)
    assert not (tmp_path / "secret.key").exists()
    assert SecretBox([key.encode()]).decrypt(box.encrypt("y")) == "y"
    with pytest.raises(SecretKeyError, match="invalid secret key"):
        load_secret_box(tmp_path, "not-a-key")


def test_ciphertext_differs_and_other_keys_cannot_read_it() -> None:
    box = SecretBox([new_key().encode()])
    first, second = box.encrypt(PASSWORD), box.encrypt(PASSWORD)
    assert first != second and PASSWORD not in first
    with pytest.raises(SecretKeyError, match="cannot be decrypted"):
        SecretBox([new_key().encode()]).decrypt(first)


async def test_rotation_re_encrypts_with_the_newest_key(store: Store) -> None:
    old, new = new_key().encode(), new_key().encode()
    created = await SettingsService(store, SecretBox([old])).create(export_with_password(), "t", 1)
    assert created.code == 200 and created.object_id
    rotating = SettingsService(store, SecretBox([new, old]))
    assert await rotating.rotate_secrets() == 1
    record = await store.get_setting(created.object_id)
    assert record is not None
    only_new = SettingsService(store, SecretBox([new]))
    assert only_new.plain_value(record)["authentication"]["basicAuth"]["password"] == PASSWORD
    assert only_new.masked_value(record)["authentication"]["basicAuth"]["password"] == MASK
    with pytest.raises(SecretKeyError):
        SettingsService(store, SecretBox([old])).plain_value(record)


async def test_rotation_re_encrypts_an_object_edited_meanwhile_as_it_is_now(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server (running with the old key still newest) saves an edit between rotate's read and
    its write: the write is refused by the object's version, and rotate reads the object again,
    re-encrypting the edit rather than failing halfway (or undoing it)."""
    old, new = new_key().encode(), new_key().encode()
    server = SettingsService(store, SecretBox([old]))
    created = await server.create(export_with_password(), "t", 1)
    assert created.object_id is not None
    object_id = created.object_id
    edited = copy.deepcopy(export_with_password().value)
    edited["authentication"]["basicAuth"] = {"username": "edited", "password": "typed again"}
    write = store.update_setting
    edits: list[ItemResult] = []

    async def edit_first(record: SettingsRecord, expected_version: int) -> None:
        if not edits:  # rotate's first write: the server's edit lands just before it
            monkeypatch.setattr(store, "update_setting", write)
            edits.append(await server.update(object_id, edited, None, "t", 2))
        await write(record, expected_version=expected_version)

    monkeypatch.setattr(store, "update_setting", edit_first)
    assert await SettingsService(store, SecretBox([new, old])).rotate_secrets() == 1
    assert edits[0].ok
    record = await store.get_setting(object_id)
    assert record is not None
    basic = SettingsService(store, SecretBox([new])).plain_value(record)["authentication"]["basicAuth"]
    assert basic == {"username": "edited", "password": "typed again"}


def test_cli_new_key_and_rotate(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "sessionexport"]
    key = subprocess.run(
        [*cli, "secrets", "new-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    SecretBox([key.encode()])  # a valid Fernet key
    env = {**os.environ, "SESSIONEXPORT_DATA_DIR": str(tmp_path)}
    nowhere = subprocess.run([*cli, "secrets", "rotate"], capture_output=True, text=True, env=env)
    assert nowhere.returncode == 2 and "no data at" in nowhere.stderr  # a wrong --data-dir, said so
    assert not (tmp_path / "sessionexport.db").exists()
    create = [*cli, "tokens", "create", "--name", "t", "--scopes", "settings.read"]
    subprocess.run(create, capture_output=True, env=env, check=True)
    # no key anywhere: said, and none made (a new key decrypts nothing, and a backup would copy it)
    keyless = subprocess.run([*cli, "secrets", "rotate"], capture_output=True, text=True, env=env)
    assert keyless.returncode == 2 and "no secret key" in keyless.stderr
    assert not (tmp_path / "secret.key").exists()
    with_key = env | {"SESSIONEXPORT_SECRET_KEY": key}
    rotated = subprocess.run([*cli, "secrets", "rotate"], capture_output=True, text=True, env=with_key)
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-encrypted the secrets of 0 settings object(s)" in rotated.stderr


async def test_rotation_is_all_or_nothing_and_names_the_object_it_cannot_decrypt(store: Store) -> None:
    old, new, stray = new_key().encode(), new_key().encode(), new_key().encode()
    first = await SettingsService(store, SecretBox([old])).create(export_with_password(), "t", 1)
    other = await SettingsService(store, SecretBox([stray])).create(export_with_password(), "t", 1)
    assert first.object_id and other.object_id
    before = await store.get_setting(first.object_id)
    with pytest.raises(SecretKeyError, match=f"settings object {other.object_id}: .*cannot be decrypted"):
        await SettingsService(store, SecretBox([new, old])).rotate_secrets()
    assert await store.get_setting(first.object_id) == before  # nothing was changed


BASIC = {"active": True, "authType": "basic", "basicAuth": {"username": "u", "password": PASSWORD}}


async def export_rotated_away(api: Api, tmp_path: Path) -> tuple[str, str]:
    """(a token, an export with a password) whose secrets another process rotated to a key this
    server does not have."""
    token = await api.token()
    created = await api.client.post(
        "/api/v2/settings/objects",
        json=[
            {"schemaId": EXPORT_SCHEMA, "scope": "environment", "value": export_value(authentication=BASIC)}
        ],
        headers=api.auth(token),
    )
    old = (tmp_path / "secret.key").read_text().strip().encode()
    assert await SettingsService(api.store, SecretBox([new_key().encode(), old])).rotate_secrets() == 1
    return token, created.json()[0]["objectId"]


async def test_while_the_key_is_rotated_only_sending_needs_the_secrets(api: Api, tmp_path: Path) -> None:
    """Rotated by another process before this one restarts: status, sample, dead letters and
    the position still answer; a replay, which sends, says why it cannot."""
    token, export_id = await export_rotated_away(api, tmp_path)
    await api.store.append_sessions(sessions(2, "rotating"), received_at=now_ms())

    for path in ("status", "sample", "deadletters", "mapping"):
        answer = await api.client.get(f"/api/v2/exports/{export_id}/{path}", headers=api.auth(token))
        assert answer.status_code == 200, (path, answer.text)
        assert PASSWORD not in answer.text
    moved = await api.client.put(
        f"/api/v2/exports/{export_id}/position", json={"start": "oldest"}, headers=api.auth(token)
    )
    assert moved.status_code == 200, moved.text
    discarded = await api.client.delete(f"/api/v2/exports/{export_id}/deadletters", headers=api.auth(token))
    assert discarded.status_code == 200, discarded.text
    replay = await api.client.post(f"/api/v2/exports/{export_id}/deadletters/replay", headers=api.auth(token))
    assert replay.status_code == 409, replay.text  # this server's setup, not the request's fault
    assert replay.json()["error"]["message"].startswith(
        "Not replayed: this server's keys cannot decrypt the export's secrets"
    )


async def test_secrets_that_cannot_be_decrypted_any_more_are_kept_sealed_or_entered_again(
    api: Api, tmp_path: Path
) -> None:
    """A lost or replaced key. An update that keeps the stored secret (the mask, or the secret
    left out) while nothing it protects changes, a pause say, stores it again as it was, never
    decrypted; one that sends it elsewhere must enter it again; entering it is the way out:
    stored with the server's key."""
    token, export_id = await export_rotated_away(api, tmp_path)
    url = f"/api/v2/settings/objects/{export_id}"
    before = await api.store.get_setting(export_id)
    assert before is not None

    masked = {**BASIC, "basicAuth": {"username": "u", "password": MASK}}
    left_out = {**BASIC, "basicAuth": {"username": "u"}}
    for authentication in (masked, left_out):
        paused = export_value(authentication=authentication, endpoint={"enableUserSessionExport": False})
        answer = await api.client.put(url, json={"value": paused}, headers=api.auth(token))
        assert answer.status_code == 200, answer.text
        record = await api.store.get_setting(export_id)
        assert record is not None and not _enabled(record)
        assert _password(record.value) == _password(before.value)  # the same ciphertext

    moved = export_value("https://elsewhere.example/sessions", authentication=masked)
    refused = await api.client.put(url, json={"value": moved}, headers=api.auth(token))
    assert refused.status_code == 400, refused.text
    [violation] = refused.json()["error"]["constraintViolations"]
    assert violation["path"] == "authentication.basicAuth.password"
    assert "the endpoint URL changed: re-enter the secret" in violation["message"]

    entered = {**BASIC, "basicAuth": {"username": "u", "password": "a new one"}}
    again = await api.client.put(
        url, json={"value": export_value(authentication=entered)}, headers=api.auth(token)
    )
    assert again.status_code == 200, again.text
    record = await api.store.get_setting(export_id)
    assert record is not None and "a new one" not in record.value  # encrypted, with the server's key
    plain = SettingsService(api.store, load_secret_box(tmp_path, None)).plain_value(record)
    assert plain["authentication"]["basicAuth"]["password"] == "a new one"


def _password(stored: str) -> str:
    return str(json.loads(stored)["authentication"]["basicAuth"]["password"])


def _enabled(record: SettingsRecord) -> bool:
    return bool(json.loads(record.value)["endpointDefinition"]["enableUserSessionExport"])
