"""The settings schemas, in Settings 2.0 form (``GET /api/v2/settings/schemas/{schemaId}``).

These definitions are data, and they are also what ``validation`` checks objects against: a
property's type, nullability, default, enum, constraints and precondition are declared once, here.
Rules that a declaration cannot express (https URLs, the custom configuration's knobs, references)
are named in ``constraints`` as custom validators and implemented in ``rules``.
"""

from __future__ import annotations

from typing import Any

from sessionexport.export.tuning import KNOBS

EXPORT_SCHEMA = "builtin:elasticsearch.user-session-export-settings-v2"
ZONE_SCHEMA = "builtin:management-zones"
SCOPE = "environment"
SCOPE_ALIASES = {"environment": SCOPE, "tenant": SCOPE}
MAX_EXPORTS = 3


def _enum(name: str, *items: tuple[str, str]) -> dict[str, Any]:
    return {
        "description": "",
        "displayName": name,
        "documentation": "",
        "items": [{"value": value, "displayName": label, "description": ""} for value, label in items],
        "type": "enum",
    }


def _prop(kind: Any, label: str, description: str = "", **extra: Any) -> dict[str, Any]:
    prop: dict[str, Any] = {
        "displayName": label,
        "description": description,
        "documentation": "",
        "type": kind,
        "nullable": False,
        "maxObjects": 1,
        "modificationPolicy": "DEFAULT",
    }
    prop.update(extra)
    return prop


def _ref(section: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/{section}/{name}"}


def _when(prop: str, value: Any) -> dict[str, Any]:
    return {"type": "EQUALS", "property": prop, "expectedValue": value}


def _object_type(label: str, properties: dict[str, Any], summary: str = "") -> dict[str, Any]:
    return {
        "displayName": label,
        "description": "",
        "documentation": "",
        "summaryPattern": summary,
        "type": "object",
        "version": "0",
        "versionInfo": "",
        "properties": properties,
    }


HTTPS_URL = {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "https-url"}
NOT_BLANK = {"type": "NOT_BLANK"}


def _length(maximum: int) -> dict[str, Any]:
    return {"type": "LENGTH", "minLength": 1, "maxLength": maximum}


EXPORT_SETTINGS: dict[str, Any] = {
    "schemaId": EXPORT_SCHEMA,
    "version": "0.0.214",
    "dynatrace": "1",
    "displayName": "User session exports",
    "description": (
        "Stream completed user sessions (user actions, events, errors and timings) as JSON to an HTTPS"
        " endpoint, optionally restricted to a management zone. Up to three exports to different endpoints."
    ),
    "documentation": "",
    "maturity": "GENERAL_AVAILABILITY",
    "allowedScopes": [SCOPE],
    "multiObject": True,
    "ordered": False,
    "maxObjects": MAX_EXPORTS,
    "schemaGroups": ["group:integration.external", "group:integration"],
    "ownerBasedAccessControl": False,
    "keyProperty": None,
    "summaryPattern": "{endpointDefinition.endpointUrl}",
    "enums": {
        "AuthType": _enum("Authentication type", ("basic", "Basic authentication"), ("oauth2", "OAuth 2.0")),
        "GrantType": _enum("Grant type", ("clientCredentials", "Client credentials")),
        "SendCredentials": _enum("Send credentials", ("header", "Header")),
    },
    "types": {
        "EndpointDefinition": _object_type(
            "Define your endpoint",
            {
                "endpointUrl": _prop(
                    "text",
                    "Endpoint URL",
                    "HTTPS URL that receives the sessions (for Elasticsearch: .../_bulk).",
                    constraints=[NOT_BLANK, _length(2000), HTTPS_URL],
                ),
                "enableUserSessionExport": _prop(
                    "boolean", "Enable user session export", "Turn off to pause this export.", default=True
                ),
                "contentType": _prop(
                    "text",
                    "Content type",
                    "application/json or application/x-ndjson (Elasticsearch).",
                    default="application/json",
                    constraints=[
                        NOT_BLANK,
                        _length(200),
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "media-type"},
                    ],
                ),
                "usePost": _prop("boolean", "Use POST method (instead of PUT)", default=False),
            },
        ),
        "BasicAuth": _object_type(
            "Basic authentication",
            {
                "username": _prop(
                    "text",
                    "User name",
                    constraints=[
                        NOT_BLANK,
                        _length(500),
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "basic-user-name"},
                    ],
                ),
                "password": _prop(
                    "secret", "Password", constraints=[NOT_BLANK], forceSecretResubmission=True
                ),
            },
        ),
        "OAuth2": _object_type(
            "OAuth 2.0",
            {
                "grantType": _prop(_ref("enums", "GrantType"), "Grant type", default="clientCredentials"),
                "accessTokenUrl": _prop(
                    "text", "Access token URL", constraints=[NOT_BLANK, _length(2000), HTTPS_URL]
                ),
                "clientId": _prop("text", "Client ID", constraints=[NOT_BLANK, _length(500)]),
                "clientSecret": _prop(
                    "secret", "Client secret", constraints=[NOT_BLANK], forceSecretResubmission=True
                ),
                "scope": _prop(
                    "text",
                    "Scope",
                    "The scope of access you are requesting.",
                    nullable=True,
                    constraints=[_length(500)],
                ),
                "sendCredentials": _prop(
                    _ref("enums", "SendCredentials"), "Send credentials", default="header"
                ),
            },
        ),
        "Authentication": _object_type(
            "Authentication",
            {
                "active": _prop("boolean", "Activate", default=False),
                "authType": _prop(
                    _ref("enums", "AuthType"), "Authentication type", precondition=_when("active", True)
                ),
                "basicAuth": _prop(
                    _ref("types", "BasicAuth"),
                    "Basic authentication",
                    precondition={
                        "type": "AND",
                        "preconditions": [_when("active", True), _when("authType", "basic")],
                    },
                ),
                "oAuth2": _prop(
                    _ref("types", "OAuth2"),
                    "OAuth 2.0 (Early Adopter)",  # Dynatrace's label
                    precondition={
                        "type": "AND",
                        "preconditions": [_when("active", True), _when("authType", "oauth2")],
                    },
                ),
            },
        ),
        "SendDirect": _object_type(
            "Send data directly to Elasticsearch",
            {
                "active": _prop("boolean", "Activate", default=False),
                "indexName": _prop(
                    "text",
                    "Name of the index where data is sent",
                    precondition=_when("active", True),
                    constraints=[
                        NOT_BLANK,
                        _length(255),
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "elasticsearch-index-name"},
                    ],
                ),
                "docType": _prop(
                    "text",
                    "Type of documents in the Elasticsearch index",
                    "Elasticsearch 6/7: _doc. Elasticsearch 8: leave empty (it rejects types).",
                    nullable=True,
                    precondition=_when("active", True),
                    constraints=[_length(255)],
                ),
            },
        ),
        "ExportBehavior": _object_type(
            "Export scope, alerting, and advanced configuration",
            {
                "managementZone": _prop(
                    "setting",
                    "Management zone",
                    "Export only sessions with a user action of an application in this zone.",
                    nullable=True,
                    referencedType=ZONE_SCHEMA,
                    constraints=[
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "management-zone-exists"}
                    ],
                ),
                "disableNotification": _prop("boolean", "Disable notification", default=False),
                "customConfiguration": _prop(
                    "text",
                    "Custom configuration properties",
                    f"JSON object of exporter tuning knobs: {', '.join(KNOBS)}.",
                    nullable=True,
                    constraints=[
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "custom-configuration"}
                    ],
                ),
            },
        ),
    },
    "properties": {
        "endpointDefinition": _prop(_ref("types", "EndpointDefinition"), "Define your endpoint"),
        "authentication": _prop(_ref("types", "Authentication"), "Authentication"),
        "sendDirect": _prop(_ref("types", "SendDirect"), "Send data directly to Elasticsearch"),
        "exportBehavior": _prop(
            _ref("types", "ExportBehavior"), "Export scope, alerting, and advanced configuration"
        ),
    },
    "constraints": [
        {"type": "SECRET_RESUBMISSION", "checkAllProperties": False},
        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "elasticsearch-direct"},
    ],
    "schemaConstraints": [],
    "deletionConstraints": [
        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "export-without-pending-dead-letters"},
    ],
    "metadata": {},
    "uiCustomization": {},
    "tableColumns": {},
}

ZONE_ATTRIBUTES = (
    ("APPLICATION_NAME", "Application name"),
    ("APPLICATION_ID", "Application id (APPLICATION-...)"),
    ("APPLICATION_TYPE", "Application type"),
    ("USER_TYPE", "User type"),
    ("COUNTRY", "Country"),
)
ZONE_OPERATORS = (
    ("EQUALS", "equals"),
    ("CONTAINS", "contains"),
    ("BEGINS_WITH", "begins with"),
    ("REGEX", "matches regular expression"),
)

ZONE_SETTINGS: dict[str, Any] = {
    "schemaId": ZONE_SCHEMA,
    "version": "1.0.0",
    "dynatrace": "1",
    "displayName": "Management zones",
    "description": "A named part of the environment; a session is in a zone when any of its enabled rules matches.",
    "documentation": "",
    "maturity": "GENERAL_AVAILABILITY",
    "allowedScopes": [SCOPE],
    "multiObject": True,
    "ordered": False,
    "maxObjects": 1000,
    "schemaGroups": ["group:management-zones"],
    "ownerBasedAccessControl": False,
    "keyProperty": "name",
    "summaryPattern": "{name}",
    "enums": {
        "Attribute": _enum("Attribute", *ZONE_ATTRIBUTES),
        "Operator": _enum("Operator", *ZONE_OPERATORS),
    },
    "types": {
        "Rule": _object_type(
            "Rule",
            {
                "enabled": _prop("boolean", "Enabled", default=True),
                "attribute": _prop(_ref("enums", "Attribute"), "Attribute"),
                "operator": _prop(_ref("enums", "Operator"), "Operator", default="EQUALS"),
                "value": _prop(
                    "text",
                    "Value",
                    constraints=[
                        NOT_BLANK,
                        _length(500),
                        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "zone-rule"},
                    ],
                ),
                "caseSensitive": _prop("boolean", "Case sensitive", default=False),
            },
            summary="{attribute} {operator} {value}",
        ),
    },
    "properties": {
        "name": _prop("text", "Name", constraints=[NOT_BLANK, _length(200)]),
        "description": _prop("text", "Description", nullable=True, constraints=[_length(1000)]),
        "rules": _prop(
            "list",
            "Rules",
            items={"type": _ref("types", "Rule")},
            minObjects=1,
            maxObjects=100,
        ),
    },
    "constraints": [{"type": "UNIQUE", "uniqueProperties": ["name"]}],
    "schemaConstraints": [],
    "deletionConstraints": [
        {"type": "CUSTOM_VALIDATOR_REF", "customValidatorId": "zone-not-referenced"},
    ],
    "metadata": {},
    "uiCustomization": {},
    "tableColumns": {},
}

SCHEMAS: dict[str, dict[str, Any]] = {EXPORT_SCHEMA: EXPORT_SETTINGS, ZONE_SCHEMA: ZONE_SETTINGS}


def schema_stub(schema: dict[str, Any]) -> dict[str, Any]:
    """The list form of a schema (``GET /api/v2/settings/schemas``)."""
    return {
        "schemaId": schema["schemaId"],
        "displayName": schema["displayName"],
        "latestSchemaVersion": schema["version"],
        "multiObject": schema["multiObject"],
        "ordered": schema["ordered"],
        "maturity": schema["maturity"],
        "ownerBasedAccessControl": schema["ownerBasedAccessControl"],
    }


def secret_paths(schema: dict[str, Any]) -> list[tuple[str, ...]]:
    """Paths (property names from the root) of every secret property of a schema."""
    paths: list[tuple[str, ...]] = []

    def walk(properties: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for name, prop in properties.items():
            kind = prop["type"]
            if kind == "secret":
                paths.append((*prefix, name))
            elif isinstance(kind, dict) and kind["$ref"].startswith("#/types/"):
                walk(schema["types"][kind["$ref"].removeprefix("#/types/")]["properties"], (*prefix, name))

    walk(schema["properties"], ())
    return paths
