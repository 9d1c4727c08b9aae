"""``/api/v2/settings`` (Settings 2.0 compatible) through the real app and a real SQLite store."""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from sessionexport.config import ServerConfig
from sessionexport.settings.secrets import MASK, load_secret_box
from sessionexport.store import DATABASE_FILE
from tests.conftest import Api
from tests.support.backend import stored_text

pytestmark = pytest.mark.store  # on PostgreSQL too (tests/support/backend.py)

EXPORT = "builtin:elasticsearch.user-session-export-settings-v2"
ZONES = "builtin:management-zones"
OBJECTS = "/api/v2/settings/objects"
SCHEMAS = "/api/v2/settings/schemas"
PASSWORD = "hunter2-secret-value"
CLIENT_SECRET = "oauth-secret-value"
TOKEN_URL = "https://auth.example/oauth/token"

DOCUMENTED_VALUE: dict[str, Any] = {
    "endpointDefinition": {
        "endpointUrl": "https://endpoint-export.dev",
        "enableUserSessionExport": True,
        "contentType": "application/json",
        "usePost": False,
    },
    "authentication": {"active": False},
    "sendDirect": {"active": False},
    "exportBehavior": {"managementZone": None, "disableNotification": False, "customConfiguration": None},
}


# -- bodies ---------------------------------------------------------------------------------------


def export_value(
    url: str = "https://collector.example/sessions",
    *,
    endpoint: dict[str, Any] | None = None,
    authentication: dict[str, Any] | None = None,
    send_direct: dict[str, Any] | None = None,
    behavior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "endpointDefinition": {
            "endpointUrl": url,
            "enableUserSessionExport": True,
            "contentType": "application/json",
            "usePost": False,
            **(endpoint or {}),
        },
        "authentication": authentication or {"active": False},
        "sendDirect": send_direct or {"active": False},
        "exportBehavior": {
            "managementZone": None,
            "disableNotification": False,
            "customConfiguration": None,
            **(behavior or {}),
        },
    }


def basic_auth(
    username: str = "exporter", password: str = PASSWORD, auth_type: str = "basic"
) -> dict[str, Any]:
    return {"active": True, "authType": auth_type, "basicAuth": {"username": username, "password": password}}


def oauth2(secret: str = CLIENT_SECRET, token_url: str = TOKEN_URL, **extra: Any) -> dict[str, Any]:
    return {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "grantType": "clientCredentials",
            "accessTokenUrl": token_url,
            "clientId": "client-1",
            "clientSecret": secret,
            "scope": None,
            "sendCredentials": "header",
            **extra,
        },
    }


def zone_value(name: str, operator: str = "EQUALS", value: str = "x") -> dict[str, Any]:
    return {"name": name, "rules": [{"attribute": "APPLICATION_NAME", "operator": operator, "value": value}]}


def item(value: Any, schema: str = EXPORT, scope: str = "environment", **extra: Any) -> dict[str, Any]:
    return {"schemaId": schema, "scope": scope, "value": value, **extra}


def violations(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) of every constraint violation in a per-item result or an error envelope."""
    error = result["error"]
    return [(v["path"], v["message"]) for v in error.get("constraintViolations") or []]


def violation_at(result: dict[str, Any], path: str) -> str:
    """The message of the violation at ``path`` (fails when there is none)."""
    messages = [message for where, message in violations(result) if where == path]
    assert messages, f"no violation at {path!r} in {violations(result)}"
    return messages[0]


# -- a client that remembers every response --------------------------------------------------------


@dataclass
class Settings:
    api: Api
    headers: dict[str, str]
    responses: list[httpx.Response] = field(default_factory=list)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.api.client.request(method, url, headers=self.headers, **kwargs)
        self.responses.append(response)
        return response

    async def post(self, *items: dict[str, Any], **params: Any) -> httpx.Response:
        return await self._send("POST", OBJECTS, json=list(items), params=params)

    async def create(self, value: dict[str, Any], schema: str = EXPORT, **extra: Any) -> str:
        response = await self.post(item(value, schema, **extra))
        assert response.status_code == 200, response.text
        [result] = response.json()
        assert result["code"] == 200
        object_id: str = result["objectId"]
        return object_id

    async def get(self, object_id: str) -> httpx.Response:
        return await self._send("GET", f"{OBJECTS}/{object_id}")

    async def read(self, object_id: str) -> dict[str, Any]:
        response = await self.get(object_id)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def put(
        self, object_id: str, value: Any, update_token: str | None = None, **params: Any
    ) -> httpx.Response:
        body: dict[str, Any] = {"value": value}
        if update_token is not None:
            body["updateToken"] = update_token
        return await self._send("PUT", f"{OBJECTS}/{object_id}", json=body, params=params)

    async def delete(self, object_id: str, **params: Any) -> httpx.Response:
        return await self._send("DELETE", f"{OBJECTS}/{object_id}", params=params)

    async def list(self, **params: Any) -> httpx.Response:
        return await self._send("GET", OBJECTS, params=params)

    async def all_ids(self, **params: Any) -> builtins.list[str]:  # ``list`` is a method here
        response = await self.list(pageSize=500, **params)
        assert response.status_code == 200, response.text
        return [obj["objectId"] for obj in response.json()["items"]]

    def assert_never_shown(self, *plaintexts: str) -> None:
        assert self.responses
        for response in self.responses:
            for plaintext in plaintexts:
                assert plaintext not in response.text, f"{response.request.method} {response.request.url}"


@pytest.fixture
async def settings(api: Api) -> Settings:
    return Settings(api, api.auth(await api.token()))


def database_bytes(config: ServerConfig) -> bytes:
    """What the database keeps at rest: the SQLite database and its WAL, as they are on disk; on
    PostgreSQL, every row of the settings objects."""
    if config.database_url is not None:
        return stored_text(config.database_url, "settings_objects")
    files = sorted(config.data_dir.glob(f"{DATABASE_FILE}*"))
    assert config.data_dir / DATABASE_FILE in files
    return b"".join(path.read_bytes() for path in files)


async def stored_secret(api: Api, config: ServerConfig, object_id: str, *path: str) -> str:
    """A stored secret, decrypted with the server's key file (what the exporter would send)."""
    record = await api.store.get_setting(object_id)
    assert record is not None
    node: Any = orjson.loads(record.value)
    for name in path:
        node = node[name]
    assert node.startswith("fernet:")
    return load_secret_box(config.data_dir, None).decrypt(node)


# -- 1. the documented flow ----------------------------------------------------------------------


async def test_documented_dynatrace_create_then_read_flow(settings: Settings) -> None:
    body = [{"schemaVersion": "0.0.214", "schemaId": EXPORT, "scope": "tenant", "value": DOCUMENTED_VALUE}]
    created = await settings.api.client.post(
        f"{OBJECTS}?schemaIds={EXPORT}&scopes=tenant", json=body, headers=settings.headers
    )
    assert created.status_code == 200
    [result] = created.json()
    assert set(result) == {"code", "objectId"}
    assert result["code"] == 200
    object_id = result["objectId"]
    assert isinstance(object_id, str) and object_id

    listed = await settings.api.client.get(
        f"{OBJECTS}?schemaIds={EXPORT}&scopes=tenant&fields=objectId,value", headers=settings.headers
    )
    assert listed.status_code == 200
    page = listed.json()
    assert page["totalCount"] == 1
    assert page["nextPageKey"] is None
    [obj] = page["items"]
    assert set(obj) == {"objectId", "value"}
    assert obj["objectId"] == object_id
    value = obj["value"]
    assert value["endpointDefinition"] == DOCUMENTED_VALUE["endpointDefinition"]
    assert value["authentication"]["active"] is False
    assert value["sendDirect"]["active"] is False
    assert value["exportBehavior"] == DOCUMENTED_VALUE["exportBehavior"]


async def test_default_list_fields_are_object_id_and_value(settings: Settings) -> None:
    await settings.create(export_value())
    response = await settings.list(schemaIds=EXPORT)
    assert response.status_code == 200
    [obj] = response.json()["items"]
    assert set(obj) == {"objectId", "value"}


async def test_get_object_has_the_full_field_set(settings: Settings) -> None:
    object_id = await settings.create(export_value(), externalId="ext-1")
    obj = await settings.read(object_id)
    assert obj["objectId"] == object_id
    assert obj["schemaId"] == EXPORT
    assert obj["schemaVersion"] == "0.0.214"
    assert obj["scope"] == "environment"
    assert obj["externalId"] == "ext-1"
    assert obj["summary"] == "https://collector.example/sessions"
    assert isinstance(obj["created"], int) and obj["created"] == obj["modified"]
    assert isinstance(obj["updateToken"], str) and obj["updateToken"]
    assert obj["value"]["endpointDefinition"]["endpointUrl"] == "https://collector.example/sessions"
    assert obj["owner"] is None  # no owner-based access control for this schema
    assert "modificationInfo" not in obj  # deprecated: lists only, as Dynatrace's


async def test_list_sorts_by_the_fields_asked_for(settings: Settings) -> None:
    for host in ("b", "c", "a"):
        await settings.create(export_value(f"https://{host}.example"))
    url = "value.endpointDefinition.endpointUrl"

    async def hosts(sort: str) -> list[str]:
        response = await settings.list(schemaIds=EXPORT, fields="value", sort=sort, pageSize=2)
        assert response.status_code == 200, response.text
        page = response.json()
        following = await settings.list(nextPageKey=page["nextPageKey"])  # the key keeps the order
        items = page["items"] + following.json()["items"]
        return [item["value"]["endpointDefinition"]["endpointUrl"][8] for item in items]

    assert await hosts(url) == ["a", "b", "c"]
    assert await hosts(f"-{url}") == ["c", "b", "a"]
    assert await hosts(f"-author,{url}") == ["a", "b", "c"]  # one author: the second field decides
    assert await hosts(f" {url}") == ["a", "b", "c"]  # "+field" as a query string decodes it


@pytest.mark.parametrize("sort", ["objectId", "value.", "-", "modified,,"])
async def test_sort_by_an_unknown_field_is_400(settings: Settings, sort: str) -> None:
    response = await settings.list(schemaIds=EXPORT, sort=sort)
    assert response.status_code == 400
    assert response.json()["error"]["constraintViolations"][0]["path"] == "sort"


# -- 2. schemas ------------------------------------------------------------------------------------


async def test_schema_list_holds_both_schemas(settings: Settings) -> None:
    response = await settings.api.client.get(SCHEMAS, headers=settings.headers)
    assert response.status_code == 200
    body = response.json()
    ids = {s["schemaId"] for s in body["items"]}
    assert ids == {EXPORT, ZONES}
    assert body["totalCount"] == 2
    export = next(s for s in body["items"] if s["schemaId"] == EXPORT)
    assert export["displayName"] == "User session exports"
    assert export["latestSchemaVersion"] == "0.0.214"
    assert export["multiObject"] is True


async def test_schema_list_fields_restrict_keys_and_unknown_field_is_400(settings: Settings) -> None:
    response = await settings.api.client.get(
        SCHEMAS, params={"fields": "schemaId,displayName"}, headers=settings.headers
    )
    assert response.status_code == 200
    assert all(set(s) == {"schemaId", "displayName"} for s in response.json()["items"])

    bad = await settings.api.client.get(SCHEMAS, params={"fields": "schemaId,nope"}, headers=settings.headers)
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == 400
    assert violation_at(bad.json(), "fields")


async def test_export_schema_definition(settings: Settings) -> None:
    response = await settings.api.client.get(f"{SCHEMAS}/{EXPORT}", headers=settings.headers)
    assert response.status_code == 200
    schema = response.json()
    assert schema["schemaId"] == EXPORT
    assert schema["version"] == "0.0.214"
    assert schema["maxObjects"] == 3
    assert schema["allowedScopes"] == ["environment"]
    assert schema["schemaGroups"] == ["group:integration.external", "group:integration"]
    assert schema["properties"]["endpointDefinition"]["type"] == {"$ref": "#/types/EndpointDefinition"}
    assert schema["properties"]["authentication"]["type"] == {"$ref": "#/types/Authentication"}
    assert [i["value"] for i in schema["enums"]["AuthType"]["items"]] == ["basic", "oauth2"]
    assert schema["types"]["BasicAuth"]["properties"]["password"]["type"] == "secret"
    assert schema["types"]["OAuth2"]["properties"]["clientSecret"]["type"] == "secret"
    auth = schema["types"]["Authentication"]["properties"]
    assert auth["authType"]["type"] == {"$ref": "#/enums/AuthType"}
    assert auth["authType"]["precondition"] == {"type": "EQUALS", "property": "active", "expectedValue": True}
    assert auth["basicAuth"]["precondition"]["type"] == "AND"
    assert schema["types"]["SendDirect"]["properties"]["indexName"]["precondition"] == {
        "type": "EQUALS",
        "property": "active",
        "expectedValue": True,
    }


async def test_schema_with_explicit_version_and_zone_schema(settings: Settings) -> None:
    ok = await settings.api.client.get(
        f"{SCHEMAS}/{EXPORT}", params={"schemaVersion": "0.0.214"}, headers=settings.headers
    )
    assert ok.status_code == 200
    zones = await settings.api.client.get(f"{SCHEMAS}/{ZONES}", headers=settings.headers)
    assert zones.status_code == 200
    assert zones.json()["schemaId"] == ZONES


@pytest.mark.parametrize(
    ("schema_id", "params"),
    [("builtin:no-such-schema", {}), (EXPORT, {"schemaVersion": "9.9.9"})],
)
async def test_unknown_schema_or_version_is_404_in_error_envelope(
    settings: Settings, schema_id: str, params: dict[str, str]
) -> None:
    response = await settings.api.client.get(
        f"{SCHEMAS}/{schema_id}", params=params, headers=settings.headers
    )
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == 404
    assert body["error"]["message"]


# -- 3. status codes -----------------------------------------------------------------------------


async def test_post_all_valid_is_200(settings: Settings) -> None:
    response = await settings.post(
        item(export_value("https://a.example")), item(export_value("https://b.example"))
    )
    assert response.status_code == 200
    results = response.json()
    assert [r["code"] for r in results] == [200, 200]
    assert len({r["objectId"] for r in results}) == 2
    assert len(await settings.all_ids(schemaIds=EXPORT)) == 2


async def test_post_mixed_outcomes_is_207(settings: Settings) -> None:
    response = await settings.post(
        item(export_value("https://ok.example")), item(export_value("http://plain.example"))
    )
    assert response.status_code == 207
    ok, bad = response.json()
    assert ok["code"] == 200 and ok["objectId"]
    assert bad["code"] == 400
    assert "https" in violation_at(bad, "endpointDefinition.endpointUrl")
    assert await settings.all_ids(schemaIds=EXPORT) == [ok["objectId"]]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://user:pass@collector.example/sessions", "must not contain credentials"),
        ("https://collector.example:99999/sessions", "is not a valid URL: Port out of range"),
        ("https://collector.example/export/\tevents", "must not contain control characters"),
        ("https://collector.example/a\x7fb", "must not contain control characters"),
        ("https://xn--a.example/sessions", "is not a valid URL: Codepoint U+0080"),
        ("https://exa mple.com/x", "has no valid host name ('exa%20mple.com')"),
        ("https://a..b/x", "has no valid host name ('a..b')"),
        ("https://.com/x", "has no valid host name ('.com')"),
        ("https://-a.example/x", "has no valid host name"),
    ],
)
async def test_endpoint_urls_with_credentials_or_no_valid_port_are_refused(
    settings: Settings, url: str, reason: str
) -> None:
    response = await settings.post(item(export_value(url)))
    assert response.status_code == 400
    assert reason in violation_at(response.json()[0], "endpointDefinition.endpointUrl")
    assert await settings.all_ids(schemaIds=EXPORT) == []


@pytest.mark.parametrize(
    "url",
    [
        "https://collector.example./sessions",
        "https://[::1]:9200/_bulk",
        "https://10.0.0.7/in",
        "https://bücher.example/in",
        "https://es_internal.corp:9200/_bulk",
    ],
)
async def test_hosts_a_client_can_reach_are_taken(settings: Settings, url: str) -> None:
    response = await settings.post(item(export_value(url)))
    assert response.status_code == 200, response.text


async def test_validate_only_given_twice_is_refused_and_nothing_is_stored(settings: Settings) -> None:
    twice = [("validateOnly", "true"), ("validateOnly", "false")]
    created = await settings._send(
        "POST", OBJECTS, json=[item(export_value("https://collector.example/in"))], params=twice
    )
    assert created.status_code == 400, created.text
    assert violation_at(created.json(), "validateOnly") == "given more than once"
    assert await settings.all_ids(schemaIds=EXPORT) == []
    object_id = await settings.create(export_value("https://collector.example/in"))
    before = await settings.read(object_id)
    changed = export_value("https://other.example/in")
    updated = await settings._send("PUT", f"{OBJECTS}/{object_id}", json={"value": changed}, params=twice)
    assert updated.status_code == 400
    assert await settings.read(object_id) == before


async def test_spaces_around_urls_are_not_stored(settings: Settings) -> None:
    value = export_value(" https://collector.example/in \n")
    value["authentication"] = {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {"accessTokenUrl": "\thttps://login.example/token ", "clientId": "c", "clientSecret": "s"},
    }
    response = await settings.post(item(value))
    assert response.status_code == 200, response.text
    stored = (await settings.get(response.json()[0]["objectId"])).json()["value"]
    assert stored["endpointDefinition"]["endpointUrl"] == "https://collector.example/in"
    assert stored["authentication"]["oAuth2"]["accessTokenUrl"] == "https://login.example/token"


async def test_a_space_in_an_endpoint_path_is_kept_the_client_encodes_it(settings: Settings) -> None:
    response = await settings.post(item(export_value("https://collector.example/in gest")))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json\r\nX-Injected: yes",
        "application/json\r\n;charset=utf-8",
        "application/json\n",
        "application/json ",
        'application/json;a="é"',
        "json",
        "application/json; charset",
        "application/json extra",
    ],
)
async def test_a_content_type_must_be_a_media_type(settings: Settings, content_type: str) -> None:
    """It is sent as a header: anything else would fail every bulk, or add headers of its own."""
    value = export_value("https://collector.example/sessions")
    value["endpointDefinition"]["contentType"] = content_type
    response = await settings.post(item(value))
    assert response.status_code == 400
    assert "must be a media type" in violation_at(response.json()[0], "endpointDefinition.contentType")
    value["endpointDefinition"]["contentType"] = "application/x-ndjson; charset=utf-8"
    assert (await settings.post(item(value))).status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type", "path", "message"),
    [
        (
            b'[{"schemaId": "builtin:x", "value":',
            "application/json",
            "",
            "invalid JSON at byte 35: unexpected end of data",
        ),
        (b'[{"schemaId": "builtin:x"}]', "text/plain", "Content-Type", "must be application/json"),
        # JSON has no NaN, Infinity or numbers beyond a double, which the standard library reads
        (
            b'[{"schemaId": "builtin:x", "value": {"a": NaN}}]',
            "application/json",
            "",
            "invalid JSON at byte 42",
        ),
        (b'[{"value": {"a": -Infinity}}]', "application/json", "", "invalid JSON at byte 18"),
        (b'[{"value": {"a": 1e999}}]', "application/json", "", "invalid JSON at byte 17: number is infinity"),
    ],
    ids=["truncated", "text-plain", "nan", "infinity", "beyond-double"],
)
async def test_a_body_that_is_not_json_says_why(
    settings: Settings, content: bytes, content_type: str, path: str, message: str
) -> None:
    response = await settings.api.client.post(
        OBJECTS, content=content, headers={**settings.headers, "Content-Type": content_type}
    )
    assert response.status_code == 400
    [violation] = response.json()["error"]["constraintViolations"]
    assert violation["path"] == path and violation["message"].startswith(message)


async def test_a_body_nested_deeper_than_any_value_is_400_at_its_byte_on_every_json_route(
    settings: Settings,
) -> None:
    """Deep enough to exhaust Python's recursion in the code that copies values (it was a 500,
    with a long traceback logged per request), yet within what the JSON parser takes."""
    object_id = await settings.create(export_value())
    deep = "[" * 480 + "]" * 480
    value = f'{{"endpointDefinition": {deep}}}'
    routes = [
        ("POST", OBJECTS, f'[{{"value": {value}}}]'),
        ("PUT", f"{OBJECTS}/{object_id}", f'{{"value": {value}}}'),
        ("POST", "/api/v2/exports/mapping", f'{{"value": {value}}}'),
        ("POST", "/api/v2/exports/sample", f'{{"value": {value}}}'),
    ]
    for method, url, body in routes:
        opened_at = body.index("[[[[")
        headers = {**settings.headers, "Content-Type": "application/json"}
        response = await settings.api.client.request(method, url, content=body, headers=headers)
        assert response.status_code == 400, (url, response.text)
        [violation] = response.json()["error"]["constraintViolations"]
        # the first bracket past 64 levels: the value's own brackets start after the prefix
        depth_before = body[:opened_at].count("{") + body[:opened_at].count("[")
        expected = opened_at + (64 - depth_before)
        assert violation["message"] == f"invalid JSON at byte {expected}: nested deeper than 64 levels", url
    assert (await settings.read(object_id))["value"]["endpointDefinition"]["endpointUrl"]  # unchanged


async def test_post_all_invalid_is_400_with_per_item_violations(settings: Settings) -> None:
    response = await settings.post(
        item(export_value("http://one.example")), item(export_value("ftp://two.example"))
    )
    assert response.status_code == 400
    results = response.json()
    assert isinstance(results, list) and len(results) == 2
    for result in results:
        assert result["code"] == 400
        assert result["error"]["code"] == 400
        violation = result["error"]["constraintViolations"][0]
        assert violation["path"] == "endpointDefinition.endpointUrl"
        assert violation["parameterLocation"] == "PAYLOAD_BODY"
        assert result["invalidValue"]["endpointDefinition"]["endpointUrl"].endswith("example")
    assert await settings.all_ids(schemaIds=EXPORT) == []


async def test_post_unknown_schema_is_404(settings: Settings) -> None:
    response = await settings.post(item(export_value(), schema="builtin:nope"))
    assert response.status_code == 404
    [result] = response.json()
    assert result["code"] == 404
    assert "builtin:nope" in result["error"]["message"]


async def test_post_unknown_scope_is_404(settings: Settings) -> None:
    response = await settings.post(item(export_value(), scope="HOST-0123456789ABCDEF"))
    assert response.status_code == 404
    [result] = response.json()
    assert result["code"] == 404
    assert result["error"]["code"] == 404
    assert await settings.all_ids(scopes="environment") == []


async def test_post_empty_array_is_400(settings: Settings) -> None:
    response = await settings.post()
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


async def test_get_object_200_and_404(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    assert (await settings.get(object_id)).status_code == 200
    missing = await settings.get("no-such-object")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404


async def test_put_200_400_404_409(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    token = (await settings.read(object_id))["updateToken"]

    ok = await settings.put(object_id, export_value("https://new.example"), token)
    assert ok.status_code == 200
    assert ok.json() == {"code": 200, "objectId": object_id}

    invalid = await settings.put(object_id, export_value("http://new.example"))
    assert invalid.status_code == 400
    assert invalid.json()["code"] == 400
    assert violation_at(invalid.json(), "endpointDefinition.endpointUrl")

    missing = await settings.put("no-such-object", export_value())
    assert missing.status_code == 404
    assert missing.json()["code"] == 404

    stale = await settings.put(object_id, export_value("https://newer.example"), token)
    assert stale.status_code == 409
    assert stale.json()["code"] == 409
    assert stale.json()["error"]["code"] == 409

    obj = await settings.read(object_id)
    assert obj["value"]["endpointDefinition"]["endpointUrl"] == "https://new.example"


async def test_delete_204_404_409(settings: Settings) -> None:
    first = await settings.create(export_value("https://a.example"))
    second = await settings.create(export_value("https://b.example"))
    stale = (await settings.read(second))["updateToken"]
    assert (await settings.put(second, export_value("https://b2.example"))).status_code == 200

    conflict = await settings.delete(second, updateToken=stale)
    assert conflict.status_code == 409
    assert conflict.json()["code"] == 409
    assert (await settings.get(second)).status_code == 200

    deleted = await settings.delete(first)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await settings.get(first)).status_code == 404

    gone = await settings.delete(first)
    assert gone.status_code == 404
    assert gone.json()["code"] == 404

    fresh = (await settings.read(second))["updateToken"]
    assert (await settings.delete(second, updateToken=fresh)).status_code == 204
    assert await settings.all_ids(schemaIds=EXPORT) == []


# -- 4. paging -----------------------------------------------------------------------------------


@pytest.mark.parametrize("deleted", [0, 1], ids=["the page's first", "the page's last"])
async def test_deleting_what_a_page_listed_skips_nothing_on_the_next(
    settings: Settings, deleted: int
) -> None:
    """A cleanup that lists a page, deletes it and fetches the next must see every object."""
    for i in range(5):
        await settings.create(zone_value(f"zone {i}"), schema=ZONES)
    zones = await settings.all_ids(schemaIds=ZONES)  # in the listing's order
    first = (await settings.list(schemaIds=ZONES, pageSize=2, fields="objectId")).json()
    assert [o["objectId"] for o in first["items"]] == zones[:2]
    assert (await settings.delete(zones[deleted])).status_code == 204
    second = (await settings.list(nextPageKey=first["nextPageKey"])).json()
    assert [o["objectId"] for o in second["items"]] == zones[2:4]


async def test_paging_follows_next_page_key_alone(settings: Settings) -> None:
    created = [await settings.create(export_value(f"https://e{i}.example")) for i in range(3)]
    created += [await settings.create(zone_value(f"zone {i}"), schema=ZONES) for i in range(7)]

    first = await settings.list(scopes="environment", pageSize=4, fields="objectId,schemaId")
    assert first.status_code == 200
    pages = [first.json()]
    while pages[-1]["nextPageKey"]:
        response = await settings.api.client.get(
            OBJECTS, params={"nextPageKey": pages[-1]["nextPageKey"]}, headers=settings.headers
        )
        assert response.status_code == 200, response.text
        pages.append(response.json())

    assert [len(p["items"]) for p in pages] == [4, 4, 2]
    assert [p["pageSize"] for p in pages] == [4, 4, 2]
    assert {p["totalCount"] for p in pages} == {10}
    assert pages[-1]["nextPageKey"] is None
    seen = [obj["objectId"] for p in pages for obj in p["items"]]
    assert sorted(seen) == sorted(created)
    assert len(set(seen)) == 10
    # the key carries the first page's fields
    assert all(set(obj) == {"objectId", "schemaId"} for p in pages for obj in p["items"])


async def test_a_next_page_key_with_other_parameters_is_400(settings: Settings) -> None:
    for i in range(2):
        await settings.create(zone_value(f"zone {i}"), schema=ZONES)
    first = (await settings.list(scopes="environment", pageSize=1)).json()
    response = await settings.api.client.get(
        OBJECTS, params={"nextPageKey": first["nextPageKey"], "pageSize": 100}, headers=settings.headers
    )
    assert response.status_code == 400
    assert violation_at(response.json(), "pageSize")


def _forged_key(**query: Any) -> str:
    full = {
        "schemaIds": [],
        "scopes": ["environment"],
        "externalIds": [],
        "fields": None,
        "filter": None,
        "pageSize": 4,
        "offset": 0,
    }
    return base64.urlsafe_b64encode(orjson.dumps({**full, **query})).decode()


@pytest.mark.parametrize(
    "key",
    ["garbage", "%%%", _forged_key(pageSize=1000), _forged_key(offset=-1), base64.b64encode(b"[1]").decode()],
)
async def test_bad_next_page_key_is_400(settings: Settings, key: str) -> None:
    response = await settings.api.client.get(OBJECTS, params={"nextPageKey": key}, headers=settings.headers)
    assert response.status_code == 400
    assert violation_at(response.json(), "nextPageKey")


@pytest.mark.parametrize(
    "params", [{"scopes": "environment", "pageSize": 501}, {"pageSize": 0, "scopes": "environment"}, {}]
)
async def test_list_bad_parameters_are_400(settings: Settings, params: dict[str, Any]) -> None:
    response = await settings.list(**params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


async def test_list_unknown_schema_or_scope_is_404(settings: Settings) -> None:
    assert (await settings.list(schemaIds="builtin:nope")).status_code == 404
    assert (await settings.list(scopes="HOST-1")).status_code == 404


async def test_list_by_schema_and_external_id(settings: Settings) -> None:
    export = await settings.create(export_value(), externalId="mine")
    zone = await settings.create(zone_value("z"), schema=ZONES)
    assert await settings.all_ids(schemaIds=EXPORT) == [export]
    assert await settings.all_ids(schemaIds=ZONES) == [zone]
    assert sorted(await settings.all_ids(schemaIds=f"{EXPORT},{ZONES}")) == sorted([export, zone])
    assert await settings.all_ids(scopes="environment", externalIds="mine") == [export]


# -- 5. validateOnly -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["true", "True", "TRUE", "tRuE"])
async def test_validate_only_post_stores_nothing(settings: Settings, flag: str) -> None:
    response = await settings.post(item(export_value()), validateOnly=flag)
    assert response.status_code == 200
    [result] = response.json()
    assert result["code"] == 200
    assert await settings.all_ids(scopes="environment") == []


async def test_validate_only_post_reports_violations(settings: Settings) -> None:
    response = await settings.post(item(export_value("http://plain.example")), validateOnly="true")
    assert response.status_code == 400
    [result] = response.json()
    assert "https" in violation_at(result, "endpointDefinition.endpointUrl")
    assert await settings.all_ids(scopes="environment") == []


async def test_validate_only_false_stores(settings: Settings) -> None:
    response = await settings.post(item(export_value()), validateOnly="false")
    assert response.status_code == 200
    assert len(await settings.all_ids(schemaIds=EXPORT)) == 1


async def test_validate_only_put_changes_nothing(settings: Settings) -> None:
    object_id = await settings.create(export_value("https://before.example"))
    before = await settings.read(object_id)

    response = await settings.put(
        object_id, export_value("https://after.example"), before["updateToken"], validateOnly="True"
    )
    assert response.status_code == 200
    assert response.json()["code"] == 200

    invalid = await settings.put(object_id, export_value("http://after.example"), validateOnly="true")
    assert invalid.status_code == 400

    after = await settings.read(object_id)
    assert after["updateToken"] == before["updateToken"]
    assert after["value"] == before["value"]
    assert after["modified"] == before["modified"]


# -- 6. at most three exports --------------------------------------------------------------------


async def test_fourth_export_is_refused(settings: Settings) -> None:
    for i in range(3):
        await settings.create(export_value(f"https://e{i}.example"))
    response = await settings.post(item(export_value("https://e3.example")))
    assert response.status_code == 400
    [result] = response.json()
    assert result["code"] == 400
    assert any("at most 3" in message for _, message in violations(result))
    assert len(await settings.all_ids(schemaIds=EXPORT)) == 3


async def test_fourth_export_is_refused_by_validate_only_too(settings: Settings) -> None:
    for i in range(3):
        await settings.create(export_value(f"https://e{i}.example"))
    response = await settings.post(item(export_value("https://e3.example")), validateOnly="true")
    assert response.status_code == 400
    assert any("at most 3" in message for _, message in violations(response.json()[0]))


async def test_validate_only_counts_what_the_earlier_items_of_its_request_would_create(
    settings: Settings,
) -> None:
    for i in range(2):
        await settings.create(export_value(f"https://e{i}.example"))
    both = [item(export_value("https://e2.example")), item(export_value("https://e3.example"))]
    dry = await settings.post(*both, validateOnly="true")
    real = await settings.post(*both)
    assert dry.status_code == real.status_code == 207
    assert [r["code"] for r in dry.json()] == [r["code"] for r in real.json()] == [200, 400]
    assert any("at most 3" in message for _, message in violations(dry.json()[1]))


async def test_validate_only_takes_a_repeated_external_id_for_an_update(settings: Settings) -> None:
    for i in range(2):
        await settings.create(export_value(f"https://e{i}.example"))
    same = [item(export_value(f"https://x{i}.example"), externalId="x") for i in range(2)]
    dry = await settings.post(*same, validateOnly="true")
    real = await settings.post(*same)
    assert dry.status_code == real.status_code == 200
    assert [r["code"] for r in dry.json()] == [r["code"] for r in real.json()] == [200, 200]


async def test_zones_do_not_count_towards_the_export_limit(settings: Settings) -> None:
    for i in range(4):
        await settings.create(zone_value(f"zone {i}"), schema=ZONES)
    for i in range(3):
        await settings.create(export_value(f"https://e{i}.example"))


async def test_a_slot_freed_by_delete_can_be_reused(settings: Settings) -> None:
    ids = [await settings.create(export_value(f"https://e{i}.example")) for i in range(3)]
    assert (await settings.delete(ids[0])).status_code == 204
    await settings.create(export_value("https://e3.example"))


# -- 7. updateToken ------------------------------------------------------------------------------


async def test_update_token_changes_on_every_put(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    tokens = [(await settings.read(object_id))["updateToken"]]
    for i in range(2):
        response = await settings.put(object_id, export_value(f"https://v{i}.example"), tokens[-1])
        assert response.status_code == 200
        tokens.append((await settings.read(object_id))["updateToken"])
    assert len(set(tokens)) == 3
    # the token is stable while the object does not change
    assert (await settings.read(object_id))["updateToken"] == tokens[-1]

    old = await settings.put(object_id, export_value("https://old.example"), tokens[0])
    assert old.status_code == 409
    unconditional = await settings.put(object_id, export_value("https://any.example"))
    assert unconditional.status_code == 200
    assert (await settings.read(object_id))["value"]["endpointDefinition"]["endpointUrl"] == (
        "https://any.example"
    )


async def test_update_token_of_another_object_or_garbage_is_refused(settings: Settings) -> None:
    first = await settings.create(export_value("https://a.example"))
    second = await settings.create(export_value("https://b.example"))
    other = (await settings.read(second))["updateToken"]
    response = await settings.put(first, export_value("https://c.example"), other)
    assert response.status_code in (400, 409)
    garbage = await settings.put(first, export_value("https://c.example"), "not-a-token")
    assert garbage.status_code == 400
    bad_delete = await settings.delete(first, updateToken="not-a-token")
    assert bad_delete.status_code == 400
    assert (await settings.read(first))["value"]["endpointDefinition"]["endpointUrl"] == "https://a.example"


async def test_delete_with_stale_token_keeps_the_object(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    stale = (await settings.read(object_id))["updateToken"]
    assert (await settings.put(object_id, export_value("https://changed.example"))).status_code == 200
    response = await settings.delete(object_id, updateToken=stale)
    assert response.status_code == 409
    assert (await settings.read(object_id))["value"]["endpointDefinition"]["endpointUrl"] == (
        "https://changed.example"
    )


# -- 8. externalId upsert ------------------------------------------------------------------------


async def test_external_id_upserts(settings: Settings) -> None:
    first = await settings.post(item(export_value("https://one.example"), externalId="a"))
    second = await settings.post(item(export_value("https://two.example"), externalId="a"))
    assert first.status_code == second.status_code == 200
    object_id = first.json()[0]["objectId"]
    assert second.json()[0]["objectId"] == object_id
    assert await settings.all_ids(schemaIds=EXPORT) == [object_id]
    obj = await settings.read(object_id)
    assert obj["externalId"] == "a"
    assert obj["value"]["endpointDefinition"]["endpointUrl"] == "https://two.example"


@pytest.mark.parametrize("field", ["externalId", "objectId"])
async def test_a_nul_in_an_id_refuses_the_request_before_any_item_is_stored(
    settings: Settings, field: str
) -> None:
    """Such ids are kept in columns of their own, which on PostgreSQL cannot hold a NUL: refused
    as invalid, whole, on every backend (not stored in part, then answered as a storage error)."""
    bad = item(export_value("https://two.example"), externalId="ok") | {field: "bad\x00"}
    response = await settings.post(item(export_value("https://one.example"), externalId="first"), bad)
    assert response.status_code == 400, response.text
    [violation] = response.json()["error"]["constraintViolations"]
    assert violation["path"].endswith(field) and violation["parameterLocation"] == "PAYLOAD_BODY"
    assert await settings.all_ids(schemaIds=EXPORT) == []


async def test_external_id_upsert_of_a_fourth_export_is_an_update(settings: Settings) -> None:
    await settings.create(export_value("https://a.example"), externalId="a")
    await settings.create(export_value("https://b.example"))
    await settings.create(export_value("https://c.example"))
    again = await settings.post(item(export_value("https://a2.example"), externalId="a"))
    assert again.status_code == 200
    assert len(await settings.all_ids(schemaIds=EXPORT)) == 3


# -- 9. enum case-insensitivity and scope alias --------------------------------------------------


@pytest.mark.parametrize("spelling", ["BASIC", "Basic", "basic"])
async def test_auth_type_is_case_insensitive(settings: Settings, spelling: str) -> None:
    object_id = await settings.create(export_value(authentication=basic_auth(auth_type=spelling)))
    auth = (await settings.read(object_id))["value"]["authentication"]
    assert auth["authType"] == "basic"
    assert auth["basicAuth"]["username"] == "exporter"


async def test_oauth2_enums_are_returned_in_documented_form(settings: Settings) -> None:
    authentication = oauth2(grantType="ClientCredentials", sendCredentials="Header")
    authentication["authType"] = "OAuth2"
    object_id = await settings.create(export_value(authentication=authentication))
    auth = (await settings.read(object_id))["value"]["authentication"]
    assert auth["authType"] == "oauth2"
    assert auth["oAuth2"]["grantType"] == "clientCredentials"
    assert auth["oAuth2"]["sendCredentials"] == "header"


async def test_unknown_enum_value_is_a_violation(settings: Settings) -> None:
    response = await settings.post(item(export_value(authentication=basic_auth(auth_type="digest"))))
    assert response.status_code == 400
    message = violation_at(response.json()[0], "authentication.authType")
    assert "basic" in message and "oauth2" in message


@pytest.mark.parametrize(("given", "said"), [(True, "a boolean"), (2, "a number"), (["basic"], "a list")])
async def test_an_enum_value_that_is_not_text_is_named_in_json_words(
    settings: Settings, given: object, said: str
) -> None:
    authentication = {**basic_auth(), "authType": given}
    response = await settings.post(item(export_value(authentication=authentication)))
    assert response.status_code == 400
    message = violation_at(response.json()[0], "authentication.authType")
    assert message == f"expected a string, got {said}; expected one of: basic, oauth2"


async def test_tenant_scope_is_stored_as_environment(settings: Settings) -> None:
    object_id = await settings.create(export_value(), scope="tenant")
    assert (await settings.read(object_id))["scope"] == "environment"
    listed = await settings.list(scopes="tenant", fields="objectId,scope")
    assert listed.json()["items"] == [{"objectId": object_id, "scope": "environment"}]
    listed = await settings.list(scopes="environment", fields="objectId,scope")
    assert listed.json()["items"] == [{"objectId": object_id, "scope": "environment"}]


# -- 10. secrets ---------------------------------------------------------------------------------


async def test_secrets_are_masked_in_every_response(settings: Settings) -> None:
    basic = await settings.create(export_value("https://a.example", authentication=basic_auth()))
    oauth = await settings.create(export_value("https://b.example", authentication=oauth2()))

    basic_obj = await settings.read(basic)
    assert basic_obj["value"]["authentication"]["basicAuth"] == {"username": "exporter", "password": MASK}
    oauth_obj = await settings.read(oauth)
    assert oauth_obj["value"]["authentication"]["oAuth2"]["clientSecret"] == MASK
    assert oauth_obj["value"]["authentication"]["oAuth2"]["clientId"] == "client-1"

    listed = await settings.list(schemaIds=EXPORT, fields="value")
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 2
    await settings.list(scopes="environment", fields=",".join(["objectId", "value", "summary"]))

    # an invalid value is echoed back, its secrets masked
    invalid = await settings.post(
        item(export_value("http://c.example", authentication=basic_auth())),
        item(export_value("http://d.example", authentication=oauth2())),
    )
    assert invalid.status_code == 400
    first, second = invalid.json()
    assert first["invalidValue"]["authentication"]["basicAuth"]["password"] == MASK
    assert second["invalidValue"]["authentication"]["oAuth2"]["clientSecret"] == MASK
    bad_put = await settings.put(basic, export_value("http://e.example", authentication=basic_auth()))
    assert bad_put.status_code == 400
    assert bad_put.json()["invalidValue"]["authentication"]["basicAuth"]["password"] == MASK

    settings.assert_never_shown(PASSWORD, CLIENT_SECRET)


async def test_secrets_are_encrypted_at_rest(
    api: Api, settings: Settings, server_config: ServerConfig
) -> None:
    basic = await settings.create(export_value("https://a.example", authentication=basic_auth()))
    oauth = await settings.create(export_value("https://b.example", authentication=oauth2()))
    # an update rewrites the row: the old row must not leak either
    assert (
        await settings.put(
            basic,
            export_value(
                "https://a.example", authentication=basic_auth(), behavior={"disableNotification": True}
            ),
        )
    ).status_code == 200

    on_disk = database_bytes(server_config)
    assert b"fernet:" in on_disk  # what we read does hold the (encrypted) secrets
    assert basic.encode() in on_disk
    assert PASSWORD.encode() not in on_disk
    assert CLIENT_SECRET.encode() not in on_disk

    assert await stored_secret(api, server_config, basic, "authentication", "basicAuth", "password") == (
        PASSWORD
    )
    assert await stored_secret(api, server_config, oauth, "authentication", "oAuth2", "clientSecret") == (
        CLIENT_SECRET
    )


async def test_put_with_the_mask_keeps_the_secret(
    api: Api, settings: Settings, server_config: ServerConfig
) -> None:
    object_id = await settings.create(export_value(authentication=basic_auth()))
    value = (await settings.read(object_id))["value"]
    assert value["authentication"]["basicAuth"]["password"] == MASK

    value["exportBehavior"]["disableNotification"] = True
    assert (await settings.put(object_id, value)).status_code == 200
    value["exportBehavior"]["customConfiguration"] = '{"retries": 5}'
    assert (await settings.put(object_id, value)).status_code == 200

    obj = await settings.read(object_id)
    assert obj["value"]["exportBehavior"]["disableNotification"] is True
    assert obj["value"]["authentication"]["basicAuth"]["password"] == MASK
    path = ("authentication", "basicAuth", "password")
    assert await stored_secret(api, server_config, object_id, *path) == PASSWORD
    settings.assert_never_shown(PASSWORD)


async def test_turning_authentication_off_needs_no_secret(settings: Settings) -> None:
    object_id = await settings.create(export_value(authentication=basic_auth()))
    value = (await settings.read(object_id))["value"]
    value["authentication"]["active"] = False  # the round-tripped value still carries the mask
    response = await settings.put(object_id, value)
    assert response.status_code == 200, response.text
    assert (await settings.read(object_id))["value"]["authentication"] == {"active": False}


async def test_unknown_schema_does_not_echo_the_value(settings: Settings) -> None:
    response = await settings.post(item(export_value(authentication=basic_auth()), schema="builtin:nope"))
    assert response.status_code == 404
    assert "invalidValue" not in response.json()[0]
    settings.assert_never_shown(PASSWORD)


async def test_put_with_the_mask_keeps_the_oauth_secret(
    api: Api, settings: Settings, server_config: ServerConfig
) -> None:
    object_id = await settings.create(export_value(authentication=oauth2()))
    value = (await settings.read(object_id))["value"]
    value["endpointDefinition"]["enableUserSessionExport"] = False
    assert (await settings.put(object_id, value)).status_code == 200
    path = ("authentication", "oAuth2", "clientSecret")
    assert await stored_secret(api, server_config, object_id, *path) == CLIENT_SECRET

    value["authentication"]["oAuth2"]["accessTokenUrl"] = "https://elsewhere.example/token"
    response = await settings.put(object_id, value)
    assert response.status_code == 400
    assert "re-enter" in violation_at(response.json(), "authentication.oAuth2.clientSecret")
    settings.assert_never_shown(CLIENT_SECRET)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (
            lambda v: v["authentication"]["basicAuth"].update(username="someone-else"),
            "the authentication settings",
        ),
        (
            lambda v: v["endpointDefinition"].update(endpointUrl="https://attacker.example"),
            "the endpoint URL",
        ),
    ],
    ids=["username", "endpointUrl"],
)
async def test_changing_what_a_secret_protects_requires_re_entering_it(
    api: Api, settings: Settings, server_config: ServerConfig, change: Any, what: str
) -> None:
    object_id = await settings.create(export_value(authentication=basic_auth()))
    value = (await settings.read(object_id))["value"]
    change(value)

    refused = await settings.put(object_id, value)
    assert refused.status_code == 400
    reason = violation_at(refused.json(), "authentication.basicAuth.password")
    assert reason.startswith(f"{what} changed: re-enter the secret"), reason
    unchanged = await settings.read(object_id)
    assert unchanged["value"]["endpointDefinition"]["endpointUrl"] == "https://collector.example/sessions"

    value["authentication"]["basicAuth"]["password"] = "a-brand-new-password"
    assert (await settings.put(object_id, value)).status_code == 200
    path = ("authentication", "basicAuth", "password")
    assert await stored_secret(api, server_config, object_id, *path) == "a-brand-new-password"
    settings.assert_never_shown(PASSWORD, "a-brand-new-password")


async def test_creating_with_the_mask_as_secret_is_refused(settings: Settings) -> None:
    response = await settings.post(
        item(export_value(authentication=basic_auth(password=MASK))),
        item(export_value(authentication=oauth2(secret=MASK))),
    )
    assert response.status_code == 400
    basic, oauth = response.json()
    assert violation_at(basic, "authentication.basicAuth.password")
    assert violation_at(oauth, "authentication.oAuth2.clientSecret")
    assert await settings.all_ids(schemaIds=EXPORT) == []


async def test_enabling_authentication_by_put_with_the_mask_is_refused(settings: Settings) -> None:
    """There is no stored secret to keep: the mask would become the password."""
    object_id = await settings.create(export_value())
    response = await settings.put(object_id, export_value(authentication=basic_auth(password=MASK)))
    assert response.status_code == 400
    assert violation_at(response.json(), "authentication.basicAuth.password")


async def test_secrets_never_logged(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    object_id = await settings.create(export_value(authentication=basic_auth()))
    await settings.create(export_value("https://b.example", authentication=oauth2()))
    value = export_value(authentication=basic_auth(password="second-" + PASSWORD))
    assert (await settings.put(object_id, value)).status_code == 200
    await settings.post(item(export_value("http://bad.example", authentication=basic_auth())))
    await settings.read(object_id)
    for plaintext in (PASSWORD, CLIENT_SECRET):
        assert plaintext not in caplog.text
    settings.assert_never_shown(PASSWORD, CLIENT_SECRET)


async def test_validate_only_refusal_of_a_fourth_export_masks_secrets(settings: Settings) -> None:
    for i in range(3):
        await settings.create(export_value(f"https://e{i}.example"))
    response = await settings.post(
        item(export_value("https://e3.example", authentication=basic_auth())), validateOnly="true"
    )
    assert response.status_code == 400
    settings.assert_never_shown(PASSWORD)


# -- 11. validation rules --------------------------------------------------------------------------

INVALID_VALUES: list[tuple[str, dict[str, Any], str, str]] = [
    ("http endpoint", export_value("http://plain.example"), "endpointDefinition.endpointUrl", "https"),
    ("ftp endpoint", export_value("ftp://files.example"), "endpointDefinition.endpointUrl", "https"),
    ("blank endpoint", export_value("  "), "endpointDefinition.endpointUrl", "blank"),
    (
        "http token url",
        export_value(authentication=oauth2(token_url="http://auth.example/token")),
        "authentication.oAuth2.accessTokenUrl",
        "https",
    ),
    (
        "active without authType",
        export_value(authentication={"active": True}),
        "authentication.authType",
        "missing",
    ),
    (
        "basic without basicAuth",
        export_value(authentication={"active": True, "authType": "basic"}),
        "authentication.basicAuth.username",
        "missing",
    ),
    (
        "basic without basicAuth (password)",
        export_value(authentication={"active": True, "authType": "basic"}),
        "authentication.basicAuth.password",
        "missing",
    ),
    (
        "oauth2 without clientId",
        export_value(
            authentication={
                "active": True,
                "authType": "oauth2",
                "oAuth2": {"accessTokenUrl": "https://auth.example/t", "clientSecret": "s3cr3t-value"},
            }
        ),
        "authentication.oAuth2.clientId",
        "missing",
    ),
    (
        "sendDirect without indexName",
        export_value(
            endpoint={"contentType": "application/x-ndjson", "usePost": True}, send_direct={"active": True}
        ),
        "sendDirect.indexName",
        "missing",
    ),
    (
        "sendDirect with json content type",
        export_value(send_direct={"active": True, "indexName": "sessions"}),
        "endpointDefinition.contentType",
        "application/x-ndjson",
    ),
    (
        "sendDirect with PUT",
        export_value(send_direct={"active": True, "indexName": "sessions"}),
        "endpointDefinition.usePost",
        "true",
    ),
    (
        "sendDirect to an endpoint that is not _bulk",
        export_value(
            endpoint={"contentType": "application/x-ndjson", "usePost": True},
            send_direct={"active": True, "indexName": "sessions"},
        ),
        "endpointDefinition.endpointUrl",
        "/_bulk",
    ),
    (
        "sendDirect with filter_path, which takes the items away",
        export_value(
            "https://es.example:9200/_bulk?refresh=false&filter_path=errors",
            endpoint={"contentType": "application/x-ndjson", "usePost": True},
            send_direct={"active": True, "indexName": "sessions"},
        ),
        "endpointDefinition.endpointUrl",
        "must not set filter_path",
    ),
    (
        "unknown management zone",
        export_value(behavior={"managementZone": "no-such-zone"}),
        "exportBehavior.managementZone",
        "no-such-zone",
    ),
    (
        "knob out of range",
        export_value(behavior={"customConfiguration": '{"retries": 99}'}),
        "exportBehavior.customConfiguration",
        "retries",
    ),
    (
        "unknown knob",
        export_value(behavior={"customConfiguration": '{"nope": 1}'}),
        "exportBehavior.customConfiguration",
        "flushMaxSessions",
    ),
    (
        "configuration not JSON",
        export_value(behavior={"customConfiguration": "not json"}),
        "exportBehavior.customConfiguration",
        "JSON",
    ),
    (
        "configuration not an object",
        export_value(behavior={"customConfiguration": "[1, 2]"}),
        "exportBehavior.customConfiguration",
        "object",
    ),
    (
        "colon in a Basic user name",
        export_value(authentication=basic_auth(username="us:er")),
        "authentication.basicAuth.username",
        "must not contain ':'",
    ),
    ("unknown property", {**export_value(), "bogus": 1}, "bogus", "unknown property"),
    (
        "wrong type",
        export_value(endpoint={"usePost": "yes"}),
        "endpointDefinition.usePost",
        "boolean",
    ),
    (
        "null endpoint",
        export_value(endpoint={"endpointUrl": None}),
        "endpointDefinition.endpointUrl",
        "null",
    ),
]


@pytest.mark.parametrize(
    ("value", "path", "fragment"),
    [pytest.param(v, p, f, id=name) for name, v, p, f in INVALID_VALUES],
)
async def test_invalid_values_are_refused(
    settings: Settings, value: dict[str, Any], path: str, fragment: str
) -> None:
    response = await settings.post(item(value))
    assert response.status_code == 400, response.text
    [result] = response.json()
    assert fragment.lower() in violation_at(result, path).lower()
    assert await settings.all_ids(schemaIds=EXPORT) == []


async def test_unknown_knob_violation_lists_every_knob(settings: Settings) -> None:
    response = await settings.post(item(export_value(behavior={"customConfiguration": '{"nope": 1}'})))
    message = violation_at(response.json()[0], "exportBehavior.customConfiguration")
    assert "nope" in message
    for knob in ("flushMaxSessions", "flushIntervalSeconds", "retries", "timeoutSeconds", "concurrency"):
        assert knob in message


@pytest.mark.parametrize(
    "configuration",
    ['{"flushMaxSessions": 10, "flushIntervalSeconds": 0.5}', "{}", None],
)
async def test_valid_custom_configuration_is_accepted(settings: Settings, configuration: str | None) -> None:
    object_id = await settings.create(export_value(behavior={"customConfiguration": configuration}))
    stored = (await settings.read(object_id))["value"]["exportBehavior"]["customConfiguration"]
    assert stored == configuration


@pytest.mark.parametrize("blank", ["", "  "])
async def test_a_blank_optional_text_is_stored_as_not_set(settings: Settings, blank: str) -> None:
    # Dynatrace's tools send "" for an unset docType or customConfiguration; a blank _type
    # would make Elasticsearch refuse every bulk
    value = export_value(
        "https://es.example:9200/_bulk",
        endpoint={"contentType": "application/x-ndjson", "usePost": True},
        send_direct={"active": True, "indexName": "sessions", "docType": blank},
        behavior={"customConfiguration": blank, "managementZone": blank},
        authentication={
            "active": True,
            "authType": "oauth2",
            "oAuth2": {
                "accessTokenUrl": "https://idp.example/token",
                "clientId": "c",
                "clientSecret": "s",
                "scope": blank,
            },
        },
    )
    stored = (await settings.read(await settings.create(value)))["value"]
    assert stored["sendDirect"]["docType"] is None
    assert stored["authentication"]["oAuth2"]["scope"] is None
    assert stored["exportBehavior"]["customConfiguration"] is None
    assert stored["exportBehavior"]["managementZone"] is None


async def test_valid_elasticsearch_direct_configuration(settings: Settings) -> None:
    value = export_value(
        "https://es.example:9200/_bulk",
        endpoint={"contentType": "application/x-ndjson", "usePost": True},
        send_direct={"active": True, "indexName": "sessions", "docType": "_doc"},
    )
    object_id = await settings.create(value)
    assert (await settings.read(object_id))["value"]["sendDirect"] == {
        "active": True,
        "indexName": "sessions",
        "docType": "_doc",
    }


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("BAD INDEX*", "must be lower case"),
        ("bad index*", "must not contain ' ' '*'"),
        ("_hidden", "must not start with -, _ or +"),
        ("..", "must not be . or .."),
        ("a:b", "must not contain ':'"),
        ("é" * 128, "must be at most 255 bytes"),
    ],
)
async def test_an_elasticsearch_index_name_follows_its_rules(
    settings: Settings, index: str, message: str
) -> None:
    value = export_value(
        "https://es.example:9200/_bulk",
        endpoint={"contentType": "application/x-ndjson", "usePost": True},
        send_direct={"active": True, "indexName": index},
    )
    response = await settings.post(item(value))
    assert response.status_code == 400
    assert violation_at(response.json()[0], "sendDirect.indexName") == message


@pytest.mark.parametrize("index", ["sessions-2026.11", "<sessions-{now/d}>", "web.sessions_v2"])
async def test_usual_and_date_math_index_names_are_accepted(settings: Settings, index: str) -> None:
    value = export_value(
        "https://es.example:9200/_bulk",
        endpoint={"contentType": "application/x-ndjson", "usePost": True},
        send_direct={"active": True, "indexName": index},
    )
    await settings.create(value)


async def test_omitted_sections_get_their_defaults(settings: Settings) -> None:
    object_id = await settings.create({"endpointDefinition": {"endpointUrl": "https://min.example"}})
    value = (await settings.read(object_id))["value"]
    assert value["endpointDefinition"] == {
        "endpointUrl": "https://min.example",
        "enableUserSessionExport": True,
        "contentType": "application/json",
        "usePost": False,
    }
    assert value["authentication"] == {"active": False}
    assert value["sendDirect"] == {"active": False}
    assert value["exportBehavior"] == {
        "managementZone": None,
        "disableNotification": False,
        "customConfiguration": None,
    }


async def test_export_may_reference_an_existing_zone(settings: Settings) -> None:
    zone = await settings.create(zone_value("web shop"), schema=ZONES)
    export = await settings.create(export_value(behavior={"managementZone": zone}))
    assert (await settings.read(export))["value"]["exportBehavior"]["managementZone"] == zone


async def test_a_referenced_zone_cannot_be_deleted(settings: Settings) -> None:
    zone = await settings.create(zone_value("web shop"), schema=ZONES)
    export = await settings.create(export_value(behavior={"managementZone": zone}))

    refused = await settings.delete(zone)
    assert refused.status_code == 400
    assert refused.json()["code"] == 400
    # the export named as people know it, and by its id
    assert f"https://collector.example/sessions ({export})" in refused.json()["error"]["message"]
    [violation] = refused.json()["error"]["constraintViolations"]
    assert violation["parameterLocation"] == "PATH"  # the object the path names; nothing in the query
    assert (await settings.get(zone)).status_code == 200

    assert (await settings.put(export, export_value(behavior={"managementZone": None}))).status_code == 200
    assert (await settings.delete(zone)).status_code == 204


async def test_duplicate_zone_name_is_refused(settings: Settings) -> None:
    first = await settings.create(zone_value("Web Shop"), schema=ZONES)
    response = await settings.post(item(zone_value(" web shop "), schema=ZONES))
    assert response.status_code == 400
    assert violation_at(response.json()[0], "name")
    assert await settings.all_ids(schemaIds=ZONES) == [first]

    other = await settings.create(zone_value("Back office"), schema=ZONES)
    renamed = await settings.put(other, zone_value("web shop"))
    assert renamed.status_code == 400
    # renaming a zone to its own name is no duplicate
    assert (await settings.put(first, zone_value("Web Shop", value="y"))).status_code == 200


async def test_zone_regex_rule_must_compile(settings: Settings) -> None:
    response = await settings.post(item(zone_value("bad", operator="REGEX", value="("), schema=ZONES))
    assert response.status_code == 400
    assert "regular expression" in violation_at(response.json()[0], "rules[0].value")
    # "(" is fine as a plain value
    await settings.create(zone_value("fine", operator="CONTAINS", value="("), schema=ZONES)
    await settings.create(zone_value("regex", operator="regex", value="^shop-.*$"), schema=ZONES)


@pytest.mark.parametrize("pattern", [r"(a)\1", r"shop(?=-eu)"])
async def test_zone_regex_rules_need_what_re2_can_run_in_linear_time(
    settings: Settings, pattern: str
) -> None:
    response = await settings.post(
        item(zone_value("backtracking", operator="REGEX", value=pattern), schema=ZONES)
    )
    assert response.status_code == 400
    assert "RE2 syntax" in violation_at(response.json()[0], "rules[0].value")


async def test_zone_needs_at_least_one_rule(settings: Settings) -> None:
    response = await settings.post(item({"name": "empty", "rules": []}, schema=ZONES))
    assert response.status_code == 400
    assert violation_at(response.json()[0], "rules")


# -- 12. authentication and scopes ----------------------------------------------------------------


async def _routes(settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    object_id = await settings.create(export_value())
    return [
        ("GET", SCHEMAS, {}),
        ("GET", f"{SCHEMAS}/{EXPORT}", {}),
        ("GET", OBJECTS, {"params": {"scopes": "environment"}}),
        ("GET", f"{OBJECTS}/{object_id}", {}),
        ("POST", OBJECTS, {"json": [item(export_value("https://new.example"))]}),
        ("PUT", f"{OBJECTS}/{object_id}", {"json": {"value": export_value("https://put.example")}}),
        ("DELETE", f"{OBJECTS}/{object_id}", {}),
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Api-Token dt0c01.NOPE.NOPE"}, {"Authorization": "Bearer abc"}],
    ids=["none", "unknown-token", "wrong-scheme"],
)
async def test_every_route_needs_a_token(settings: Settings, headers: dict[str, str]) -> None:
    for method, url, kwargs in await _routes(settings):
        response = await settings.api.client.request(method, url, headers=headers, **kwargs)
        assert response.status_code == 401, f"{method} {url}"
        assert response.json()["error"]["code"] == 401
        assert response.headers["WWW-Authenticate"] == "Api-Token"
    assert len(await settings.all_ids(schemaIds=EXPORT)) == 1


@pytest.mark.parametrize("path", [OBJECTS, "/api/v2/exports/test", "/e/env1/api/v2/settings/objects"])
async def test_without_a_token_a_malformed_body_gets_401_not_its_faults(
    settings: Settings, path: str
) -> None:
    """The token is asked for first: a caller without one learns nothing about what it sent."""
    response = await settings.api.client.post(
        path, content=b"{bad", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["message"].startswith("Missing Authorization header")


@pytest.mark.parametrize(
    "path",
    [OBJECTS, "/api/v2/exports/test", "/e/env1/api/v2/settings/objects", f"{OBJECTS}/some-object"],
)
async def test_a_malformed_body_with_a_bad_token_or_scope_gets_401_or_403_not_its_faults(
    settings: Settings, path: str
) -> None:
    """FastAPI decodes a JSON body before the route's token checks: they are run first all the same."""
    method = "PUT" if path.endswith("some-object") else "POST"
    reader = settings.api.auth(await settings.api.token("settings.read", "sessions.read"))
    for headers, status in (({"Authorization": "Api-Token dt0c01.NOPE.NOPE"}, 401), (reader, 403)):
        response = await settings.api.client.request(
            method, path, content=b"[{", headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert "JSON" not in response.text
    scopes = ("settings.read", "settings.write", "sessions.read", "exports.manage")
    writer = settings.api.auth(await settings.api.token(*scopes))
    response = await settings.api.client.request(
        method, path, content=b"[{", headers={**writer, "Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "invalid JSON" in response.text, response.text


async def test_a_body_that_starts_with_a_byte_order_mark_is_read(settings: Settings) -> None:
    """As the standard library read it, and as ingest does: files saved on Windows start so."""
    body = b"\xef\xbb\xbf" + json.dumps([item(zone_value("bom"), ZONES)]).encode()
    headers = {**settings.headers, "Content-Type": "application/json"}
    response = await settings.api.client.post(OBJECTS, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_a_wrong_token_is_refused_before_the_body_is_read(settings: Settings) -> None:
    """Else anyone could make the server read and hold a body (up to a megabyte here, as slowly as
    they like) only to be told the token was wrong."""
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        for chunk in (b"[", b"{}", b"]"):
            read.append(chunk)
            yield chunk

    for token in ("dt0c01.NOPE.NOPE", "garbage"):
        response = await settings.api.client.post(
            OBJECTS,
            content=body(),
            headers={"Authorization": f"Api-Token {token}", "Content-Type": "application/json"},
        )
        assert response.status_code == 401, response.text
        assert response.json()["error"]["message"] == "The API token is invalid or revoked"
    assert read == []


async def test_read_token_can_read_but_not_write(settings: Settings) -> None:
    reader = settings.api.auth(await settings.api.token("settings.read"))
    for method, url, kwargs in await _routes(settings):
        response = await settings.api.client.request(method, url, headers=reader, **kwargs)
        expected = 200 if method == "GET" else 403
        assert response.status_code == expected, f"{method} {url}"
        if expected == 403:
            assert response.json()["error"]["code"] == 403
            assert "settings.write" in response.json()["error"]["message"]
    [object_id] = await settings.all_ids(schemaIds=EXPORT)
    url = (await settings.read(object_id))["value"]["endpointDefinition"]["endpointUrl"]
    assert url == "https://collector.example/sessions"


async def test_write_token_cannot_read(settings: Settings) -> None:
    writer = settings.api.auth(await settings.api.token("settings.write"))
    for method, url, kwargs in await _routes(settings):
        if method != "GET":
            continue
        response = await settings.api.client.request(method, url, headers=writer, **kwargs)
        assert response.status_code == 403, f"{method} {url}"
        assert "settings.read" in response.json()["error"]["message"]
    created = await settings.api.client.post(OBJECTS, json=[item(export_value())], headers=writer)
    assert created.status_code == 200


async def test_session_scopes_do_not_grant_settings(settings: Settings) -> None:
    sessions_only = settings.api.auth(await settings.api.token("sessions.ingest", "sessions.read"))
    for method, url, kwargs in await _routes(settings):
        response = await settings.api.client.request(method, url, headers=sessions_only, **kwargs)
        assert response.status_code == 403, f"{method} {url}"


# -- more of Dynatrace's rules ---------------------------------------------------------------------


async def test_object_id_with_an_external_id_replaces_that_object(settings: Settings) -> None:
    """Dynatrace's replace: the object named takes the value and the externalId (no new object)."""
    first = await settings.create(export_value("https://first.example"))
    replaced = await settings.post(
        item(export_value("https://second.example"), externalId="ci-1", objectId=first)
    )
    assert replaced.status_code == 200 and replaced.json() == [{"code": 200, "objectId": first}]
    obj = await settings.read(first)
    assert (obj["externalId"], obj["value"]["endpointDefinition"]["endpointUrl"]) == (
        "ci-1",
        "https://second.example",
    )
    assert await settings.all_ids(schemaIds=EXPORT) == [first]
    missing = await settings.post(item(export_value(), externalId="ci-2", objectId="nope"))
    assert missing.status_code == 404 and "nope" in missing.json()[0]["error"]["message"]
    assert await settings.all_ids(schemaIds=EXPORT) == [first]


async def test_the_api_answers_under_a_managed_environment_path(settings: Settings) -> None:
    """Dynatrace Managed and ActiveGate URLs: https://host/e/<environment id>/api/v2/..."""
    object_id = await settings.create(export_value())
    response = await settings.api.client.get(f"/e/abc12345{OBJECTS}/{object_id}", headers=settings.headers)
    assert response.status_code == 200 and response.json()["objectId"] == object_id
    schemas = await settings.api.client.get("/e/abc12345/api/v2/settings/schemas", headers=settings.headers)
    assert schemas.status_code == 200 and schemas.json()["totalCount"] >= 2
    elsewhere = await settings.api.client.get("/e/abc12345/ui", headers=settings.headers)
    assert elsewhere.status_code == 404  # only the API lives under the environment
    slashed = await settings.api.client.get("/e/abc12345/api/v2/settings/schemas/", headers=settings.headers)
    assert slashed.status_code == 307  # and the redirect stays under it (behind a proxy of /e/... only)
    assert httpx.URL(slashed.headers["location"]).path == "/e/abc12345/api/v2/settings/schemas"


async def test_a_malformed_update_token_on_delete_is_a_query_parameter(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    response = await settings.delete(object_id, updateToken="zzz")
    assert response.status_code == 400
    [violation] = response.json()["error"]["constraintViolations"]
    assert (violation["path"], violation["parameterLocation"]) == ("updateToken", "QUERY")


async def test_an_external_id_filter_longer_than_500_characters_is_refused(settings: Settings) -> None:
    response = await settings.list(schemaIds=EXPORT, externalIds="e" * 501)
    assert response.status_code == 400 and violation_at(response.json(), "externalIds")


async def test_an_update_needs_settings_read_as_well(api: Api, settings: Settings) -> None:
    object_id = await settings.create(export_value())
    value = (await settings.read(object_id))["value"]
    write_only = api.auth(await api.token("settings.write"))
    response = await api.client.put(f"{OBJECTS}/{object_id}", json={"value": value}, headers=write_only)
    assert response.status_code == 403 and "settings.read" in response.text


async def test_insert_after_and_insert_before_exclude_each_other(settings: Settings) -> None:
    object_id = await settings.create(export_value())
    value = (await settings.read(object_id))["value"]
    response = await settings._send(
        "PUT", f"{OBJECTS}/{object_id}", json={"value": value, "insertAfter": "a", "insertBefore": "b"}
    )
    assert response.status_code == 400 and "insertAfter and insertBefore" in response.text


async def test_upserts_of_one_external_id_at_once_make_one_object(settings: Settings) -> None:
    """Each checks whether the externalId is taken before it writes: they take turns, so the
    later ones update the object the first created (no unique-constraint failure, no 503)."""
    urls = [f"https://e{i}.example" for i in range(6)]
    answers = await asyncio.gather(*(settings.post(item(export_value(u), externalId="same")) for u in urls))
    assert [a.status_code for a in answers] == [200] * 6
    [obj] = (await settings.list(schemaIds=EXPORT, fields="objectId,externalId")).json()["items"]
    assert obj["externalId"] == "same"
    assert {a.json()[0]["objectId"] for a in answers} == {obj["objectId"]}


async def test_zones_of_one_name_created_at_once_make_one_zone(settings: Settings) -> None:
    answers = await asyncio.gather(*(settings.post(item(zone_value("twin"), ZONES)) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 400, 400, 400]
    assert len((await settings.list(schemaIds=ZONES)).json()["items"]) == 1


@pytest.mark.parametrize("field", ["objectId", "externalId"])
async def test_text_that_is_not_unicode_gets_400_not_500(settings: Settings, field: str) -> None:
    extra = {"externalId": "new-x", field: "\ud800"}  # a lone surrogate: JSON can say it, UTF-8 cannot
    body = json.dumps([item(zone_value("z"), ZONES, **extra)])  # ASCII: \ud800 escaped
    headers = {**settings.headers, "Content-Type": "application/json"}
    response = await settings.api.client.post(OBJECTS, content=body, headers=headers)
    assert response.status_code == 400, response.text
    [violation] = response.json()["error"]["constraintViolations"]
    assert violation["message"].startswith("invalid JSON at byte "), violation  # read strictly
    assert await settings.all_ids(schemaIds=ZONES) == []
