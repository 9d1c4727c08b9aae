"""An export configuration as the exporter needs it, read from a validated settings value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sessionexport.export.tuning import ExportTuning, parse_tuning


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str


@dataclass(frozen=True, slots=True)
class OAuth2:
    token_url: str
    client_id: str
    client_secret: str
    scope: str | None


@dataclass(frozen=True, slots=True)
class SendDirect:
    index: str
    doc_type: str | None


@dataclass(frozen=True, slots=True)
class ExportConfig:
    export_id: str
    endpoint_url: str
    enabled: bool
    content_type: str
    use_post: bool
    auth: BasicAuth | OAuth2 | None
    send_direct: SendDirect | None
    management_zone: str | None
    disable_notification: bool
    tuning: ExportTuning

    @property
    def method(self) -> str:
        return "POST" if self.use_post else "PUT"


def export_config(export_id: str, value: dict[str, Any]) -> ExportConfig:
    """From a stored value with its secrets decrypted (validation guarantees the shape)."""
    endpoint = value["endpointDefinition"]
    behavior = value["exportBehavior"]
    direct = value["sendDirect"]
    return ExportConfig(
        export_id=export_id,
        endpoint_url=endpoint["endpointUrl"].strip(),
        enabled=endpoint["enableUserSessionExport"],
        content_type=endpoint["contentType"],
        use_post=endpoint["usePost"],
        auth=_auth(value["authentication"]),
        send_direct=SendDirect(direct["indexName"], _set(direct.get("docType")))
        if direct["active"]
        else None,
        management_zone=behavior.get("managementZone"),
        disable_notification=behavior["disableNotification"],
        tuning=parse_tuning(behavior.get("customConfiguration")),
    )


def _auth(auth: dict[str, Any]) -> BasicAuth | OAuth2 | None:
    if not auth["active"]:
        return None
    if auth["authType"] == "basic":
        basic = auth["basicAuth"]
        return BasicAuth(basic["username"], basic["password"])
    oauth = auth["oAuth2"]
    return OAuth2(
        oauth["accessTokenUrl"].strip(), oauth["clientId"], oauth["clientSecret"], _set(oauth.get("scope"))
    )


def _set(text: str | None) -> str | None:
    """An optional text, None when blank (values stored before blanks were normalized to null)."""
    return text if text and text.strip() else None
