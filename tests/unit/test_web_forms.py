"""Forms generated from the settings schemas, and submitted forms read back into settings values
that the settings validation accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sessionexport.settings.schemas import EXPORT_SETTINGS, ZONE_ATTRIBUTES, ZONE_OPERATORS, ZONE_SETTINGS
from sessionexport.settings.secrets import MASK
from sessionexport.settings.validation import Context, validate_value
from sessionexport.web.forms import (
    REMOVE,
    Field,
    ListField,
    Section,
    build_form,
    unplaced_errors,
    value_from_form,
)

Item = Field | Section | ListField
SECRET = "s3cr3t-client-value"
ZONE_ID = "zone-object-id-1"

OAUTH2_EXPORT: dict[str, Any] = {
    "endpointDefinition": {
        "endpointUrl": "https://collector.example/sessions",
        "enableUserSessionExport": True,
        "contentType": "application/x-ndjson",
        "usePost": True,
    },
    "authentication": {
        "active": True,
        "authType": "oauth2",
        "oAuth2": {
            "grantType": "clientCredentials",
            "accessTokenUrl": "https://auth.example/oauth/token",
            "clientId": "client-1",
            "clientSecret": SECRET,
            "scope": "sessions.write",
            "sendCredentials": "header",
        },
    },
    "sendDirect": {"active": False},
    "exportBehavior": {
        "managementZone": ZONE_ID,
        "disableNotification": True,
        "customConfiguration": '{"retries": 2}',
    },
}

TWO_RULE_ZONE: dict[str, Any] = {
    "name": "Europe",
    "description": "Sessions from two countries",
    "rules": [
        {
            "enabled": True,
            "attribute": "COUNTRY",
            "operator": "EQUALS",
            "value": "Poland",
            "caseSensitive": False,
        },
        {
            "enabled": False,
            "attribute": "APPLICATION_NAME",
            "operator": "BEGINS_WITH",
            "value": "shop",
            "caseSensitive": True,
        },
    ],
}


# -- helpers ---------------------------------------------------------------------------------------


def walk(items: list[Item]) -> Iterator[Item]:
    for item in items:
        yield item
        if isinstance(item, Section):
            yield from walk(item.children)
        elif isinstance(item, ListField):
            yield from walk([*item.items, item.blank])


def by_name(items: list[Item]) -> dict[str, Item]:
    found: dict[str, Item] = {}
    for item in walk(items):
        assert item.name not in found, f"two form items named {item.name!r}"
        found[item.name] = item
    return found


def field(items: list[Item], name: str) -> Field:
    item = by_name(items)[name]
    assert isinstance(item, Field), item
    return item


def schema_paths(
    schema: dict[str, Any], properties: dict[str, Any], prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of a schema with its path, found independently of the form code."""
    for name, prop in properties.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path, prop
        kind = prop["type"]
        if isinstance(kind, dict) and kind["$ref"].startswith("#/types/"):
            type_ = schema["types"][kind["$ref"].split("/")[-1]]
            yield from schema_paths(schema, type_["properties"], path)


def submit(items: list[Item], entered: dict[str, str | None] | None = None) -> dict[str, str]:
    """What a browser sends for the form as rendered: checked boxes as "true", unchecked ones not at
    all, empty secrets (they are never rendered), then what the user typed in ``entered``."""
    data: dict[str, str] = {}
    for item in walk(items):
        if not isinstance(item, Field):
            continue
        if item.kind == "boolean":
            if item.value:
                data[item.name] = "true"
        elif item.kind == "secret":
            data[item.name] = ""
        else:
            data[item.name] = "" if item.value is None else str(item.value)
    for name, value in (entered or {}).items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def valid(
    schema: dict[str, Any], value: dict[str, Any], zone_ids: frozenset[str] = frozenset()
) -> dict[str, Any]:
    normalized, violations = validate_value(schema, value, Context(zone_ids=zone_ids))
    assert violations == [], violations
    return normalized


# -- building ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [EXPORT_SETTINGS, ZONE_SETTINGS], ids=["export", "zone"])
def test_every_schema_property_is_in_the_form_with_its_label_and_help(schema: dict[str, Any]) -> None:
    items = by_name(build_form(schema, None))
    for path, prop in schema_paths(schema, schema["properties"]):
        assert path in items, f"{path} is not in the form"
        item = items[path]
        assert item.label == prop["displayName"], path
        if isinstance(item, Field):
            assert item.help == prop["description"], path


def test_list_items_have_every_property_of_their_type() -> None:
    items = by_name(build_form(ZONE_SETTINGS, TWO_RULE_ZONE))
    rules = items["rules"]
    assert isinstance(rules, ListField)
    assert [i.name for i in rules.items] == ["rules[0]", "rules[1]"]
    assert [i.label for i in rules.items] == ["Rule 1", "Rule 2"]
    assert rules.blank.name == "rules[2]"  # the empty row offered for a third rule
    rule_type = ZONE_SETTINGS["types"]["Rule"]["properties"]
    for index in range(3):
        for name, prop in rule_type.items():
            item = items[f"rules[{index}].{name}"]
            assert isinstance(item, Field) and item.label == prop["displayName"]
    assert field(list(rules.items), "rules[1].value").value == "shop"
    assert field(list(rules.items), "rules[1].enabled").value is False
    assert field([rules.blank], "rules[2].value").value is None


def test_preconditions_become_conditions_on_full_paths() -> None:
    items = by_name(build_form(EXPORT_SETTINGS, None))
    conditions = {
        name: item.when for name, item in items.items() if not isinstance(item, ListField) and item.when
    }
    assert conditions == {
        "authentication.authType": [("authentication.active", True)],
        "authentication.basicAuth": [("authentication.active", True), ("authentication.authType", "basic")],
        "authentication.oAuth2": [("authentication.active", True), ("authentication.authType", "oauth2")],
        "sendDirect.indexName": [("sendDirect.active", True)],
        "sendDirect.docType": [("sendDirect.active", True)],
    }
    every_path = set(items)
    for condition in conditions.values():
        for path, _ in condition:
            assert path in every_path  # a condition names a field of the same form


def test_enum_options_come_from_the_schema() -> None:
    export = build_form(EXPORT_SETTINGS, None, settings_options=[(ZONE_ID, "Europe")])
    auth_type = field(export, "authentication.authType")
    assert auth_type.kind == "enum"
    assert auth_type.options == [("basic", "Basic authentication"), ("oauth2", "OAuth 2.0")]
    assert field(export, "authentication.oAuth2.grantType").options == [
        ("clientCredentials", "Client credentials")
    ]
    zone_field = field(export, "exportBehavior.managementZone")
    assert zone_field.kind == "setting" and zone_field.options == [(ZONE_ID, "Europe")]
    zone = build_form(ZONE_SETTINGS, None)
    assert field(zone, "rules[0].attribute").options == list(ZONE_ATTRIBUTES)
    assert field(zone, "rules[0].operator").options == list(ZONE_OPERATORS)


def test_a_new_form_shows_the_schema_defaults() -> None:
    export = build_form(EXPORT_SETTINGS, None)
    assert field(export, "endpointDefinition.enableUserSessionExport").value is True
    assert field(export, "endpointDefinition.contentType").value == "application/json"
    assert field(export, "endpointDefinition.usePost").value is False
    assert field(export, "authentication.active").value is False
    assert field(export, "authentication.oAuth2.sendCredentials").value == "header"
    zone = build_form(ZONE_SETTINGS, None)
    assert field(zone, "rules[0].enabled").value is True
    assert field(zone, "rules[0].operator").value == "EQUALS"


def test_kinds_and_required_marks() -> None:
    export = build_form(EXPORT_SETTINGS, None)
    kinds = {
        "endpointDefinition.endpointUrl": "text",
        "authentication.basicAuth.password": "secret",
        "authentication.oAuth2.clientSecret": "secret",
        "exportBehavior.customConfiguration": "textarea",
        "endpointDefinition.usePost": "boolean",
    }
    for name, kind in kinds.items():
        assert field(export, name).kind == kind, name
    assert field(export, "endpointDefinition.endpointUrl").required
    assert field(export, "authentication.oAuth2.clientSecret").required
    assert not field(export, "authentication.oAuth2.scope").required  # nullable
    assert not field(export, "sendDirect.docType").required
    assert field(build_form(ZONE_SETTINGS, None), "description").kind == "textarea"


def test_a_stored_secret_is_marked_stored_and_never_filled_in() -> None:
    masked = {**OAUTH2_EXPORT, "authentication": {**OAUTH2_EXPORT["authentication"]}}
    masked["authentication"]["oAuth2"] = {**OAUTH2_EXPORT["authentication"]["oAuth2"], "clientSecret": MASK}
    items = build_form(EXPORT_SETTINGS, masked)
    secret = field(items, "authentication.oAuth2.clientSecret")
    assert secret.secret_stored is True and secret.value is None
    assert field(items, "authentication.basicAuth.password").secret_stored is False  # none stored there
    assert field(items, "authentication.oAuth2.clientId").value == "client-1"

    typed = build_form(EXPORT_SETTINGS, OAUTH2_EXPORT)  # a refused form, shown again with what was sent
    entered = field(typed, "authentication.oAuth2.clientSecret")
    assert entered.value is None and entered.secret_stored is False
    assert SECRET not in repr(typed)


def test_violations_land_on_the_field_with_the_same_path() -> None:
    errors = {
        "endpointDefinition.endpointUrl": "must use https",
        "authentication.oAuth2.clientId": "must not be blank",
        "authentication.oAuth2": "section problem",
    }
    items = build_form(EXPORT_SETTINGS, OAUTH2_EXPORT, errors)
    assert field(items, "endpointDefinition.endpointUrl").error == "must use https"
    assert field(items, "authentication.oAuth2.clientId").error == "must not be blank"
    assert by_name(items)["authentication.oAuth2"].error == "section problem"
    others = [i for i in walk(items) if i.name not in errors]
    assert all(i.error is None for i in others)
    assert unplaced_errors(items, errors) == []


def test_zone_violations_land_on_rules_and_their_fields() -> None:
    errors = {
        "rules[1].value": "not a valid regular expression",
        "rules": "must hold 1 to 100 item(s), got 0",
    }
    items = build_form(ZONE_SETTINGS, TWO_RULE_ZONE, errors)
    assert field(items, "rules[1].value").error == "not a valid regular expression"
    assert by_name(items)["rules"].error == "must hold 1 to 100 item(s), got 0"
    assert field(items, "rules[0].value").error is None


def test_violations_without_a_field_are_listed_above_the_form() -> None:
    errors = {
        "": "at most 3 objects are allowed",
        "value.nonsense": "unknown property",
        "endpointDefinition.endpointUrl": "must use https",
    }
    items = build_form(EXPORT_SETTINGS, None, errors)
    assert unplaced_errors(items, errors) == [
        "at most 3 objects are allowed",
        "value.nonsense: unknown property",
    ]


# -- reading -----------------------------------------------------------------------------------------


def oauth2_form() -> dict[str, str]:
    """What a browser sends for a full OAuth 2.0 export typed into an empty form."""
    return submit(
        build_form(EXPORT_SETTINGS, None, settings_options=[(ZONE_ID, "Europe")]),
        {
            "endpointDefinition.endpointUrl": "  https://collector.example/sessions ",
            "endpointDefinition.contentType": "application/x-ndjson",
            "endpointDefinition.usePost": "true",
            "authentication.active": "true",
            "authentication.authType": "oauth2",
            "authentication.oAuth2.accessTokenUrl": "https://auth.example/oauth/token",
            "authentication.oAuth2.clientId": "client-1",
            "authentication.oAuth2.clientSecret": SECRET,
            "authentication.oAuth2.scope": "sessions.write",
            "exportBehavior.managementZone": ZONE_ID,
            "exportBehavior.disableNotification": "true",
            "exportBehavior.customConfiguration": '{"retries": 2}',
        },
    )


def test_a_full_oauth2_export_typed_into_the_form_is_a_valid_value() -> None:
    value = value_from_form(EXPORT_SETTINGS, oauth2_form())
    assert valid(EXPORT_SETTINGS, value, frozenset({ZONE_ID})) == OAUTH2_EXPORT


def test_an_export_round_trips_through_its_form() -> None:
    stored = valid(EXPORT_SETTINGS, OAUTH2_EXPORT, frozenset({ZONE_ID}))
    items = build_form(EXPORT_SETTINGS, stored, settings_options=[(ZONE_ID, "Europe")])
    sent = submit(items, {"authentication.oAuth2.clientSecret": SECRET})
    again = valid(EXPORT_SETTINGS, value_from_form(EXPORT_SETTINGS, sent), frozenset({ZONE_ID}))
    assert again == stored


def test_a_zone_with_two_rules_round_trips_through_its_form() -> None:
    stored = valid(ZONE_SETTINGS, TWO_RULE_ZONE)
    sent = submit(build_form(ZONE_SETTINGS, stored))
    assert "rules[2].operator" in sent  # the blank row is sent too ...
    value = value_from_form(ZONE_SETTINGS, sent)
    assert valid(ZONE_SETTINGS, value) == stored  # ... and left out


def test_a_zone_with_two_rules_typed_into_a_new_form() -> None:
    sent = submit(
        build_form(ZONE_SETTINGS, None),
        {
            "name": "Europe",
            "description": "Sessions from two countries",
            "rules[0].attribute": "COUNTRY",
            "rules[0].value": "Poland",
            # a second row, as "Add another rule" makes it
            "rules[1].enabled": None,
            "rules[1].attribute": "APPLICATION_NAME",
            "rules[1].operator": "BEGINS_WITH",
            "rules[1].value": "shop",
            "rules[1].caseSensitive": "true",
        },
    )
    assert valid(ZONE_SETTINGS, value_from_form(ZONE_SETTINGS, sent)) == TWO_RULE_ZONE


def test_absent_checkboxes_are_false_even_where_the_default_is_true() -> None:
    sent = oauth2_form()
    del sent["endpointDefinition.enableUserSessionExport"]
    del sent["exportBehavior.disableNotification"]
    value = value_from_form(EXPORT_SETTINGS, sent)
    assert value["endpointDefinition"]["enableUserSessionExport"] is False
    assert value["exportBehavior"]["disableNotification"] is False
    for text in ("true", "on", "1", "TRUE"):
        sent["exportBehavior.disableNotification"] = text
        assert value_from_form(EXPORT_SETTINGS, sent)["exportBehavior"]["disableNotification"] is True
    sent["exportBehavior.disableNotification"] = "false"
    assert value_from_form(EXPORT_SETTINGS, sent)["exportBehavior"]["disableNotification"] is False


def test_an_empty_secret_is_empty_for_a_new_object_and_the_mask_for_a_stored_one() -> None:
    sent = {**oauth2_form(), "authentication.oAuth2.clientSecret": ""}
    assert value_from_form(EXPORT_SETTINGS, sent)["authentication"]["oAuth2"]["clientSecret"] == ""
    kept = value_from_form(EXPORT_SETTINGS, sent, keep_secrets=True)
    assert kept["authentication"]["oAuth2"]["clientSecret"] == MASK
    assert kept["authentication"]["basicAuth"]["password"] == MASK
    typed = value_from_form(
        EXPORT_SETTINGS, {**sent, "authentication.oAuth2.clientSecret": "new"}, keep_secrets=True
    )
    assert typed["authentication"]["oAuth2"]["clientSecret"] == "new"


def test_an_empty_secret_of_a_new_object_is_refused_by_validation() -> None:
    sent = {**oauth2_form(), "authentication.oAuth2.clientSecret": ""}
    _, violations = validate_value(
        EXPORT_SETTINGS, value_from_form(EXPORT_SETTINGS, sent), Context(zone_ids=frozenset({ZONE_ID}))
    )
    assert [v.path for v in violations] == ["authentication.oAuth2.clientSecret"]


def test_blank_rule_rows_are_dropped_and_the_rules_renumbered() -> None:
    sent = {
        "name": "Two rules",
        "rules[0].enabled": "true",
        "rules[0].attribute": "COUNTRY",
        "rules[0].operator": "EQUALS",
        "rules[0].value": "Poland",
        # an untouched blank row between two rules: defaults only
        "rules[1].enabled": "true",
        "rules[1].attribute": "",
        "rules[1].operator": "EQUALS",
        "rules[1].value": "  ",
        "rules[7].enabled": "true",
        "rules[7].attribute": "COUNTRY",
        "rules[7].operator": "CONTAINS",
        "rules[7].value": "Austria",
        "rules[10].attribute": "USER_TYPE",
        "rules[10].operator": "EQUALS",
        "rules[10].value": "REAL_USER",
    }
    rules = value_from_form(ZONE_SETTINGS, sent)["rules"]
    assert [(r["attribute"], r["value"]) for r in rules] == [
        ("COUNTRY", "Poland"),
        ("COUNTRY", "Austria"),
        ("USER_TYPE", "REAL_USER"),
    ]  # in row order (10 after 7, not as text)
    normalized, violations = validate_value(ZONE_SETTINGS, value_from_form(ZONE_SETTINGS, sent), Context())
    assert violations == [] and len(normalized["rules"]) == 3


def test_a_rule_ticked_for_removal_is_dropped() -> None:
    sent = {
        "name": "Shrinking",
        "rules[0].attribute": "COUNTRY",
        "rules[0].operator": "EQUALS",
        "rules[0].value": "Poland",
        f"rules[0].{REMOVE}": "true",
        "rules[1].attribute": "COUNTRY",
        "rules[1].operator": "EQUALS",
        "rules[1].value": "Austria",
    }
    assert [r["value"] for r in value_from_form(ZONE_SETTINGS, sent)["rules"]] == ["Austria"]
    sent[f"rules[1].{REMOVE}"] = "true"  # every rule removed: the schema's minimum is reported
    value = value_from_form(ZONE_SETTINGS, sent)
    assert value["rules"] == []
    _, violations = validate_value(ZONE_SETTINGS, value, Context())
    assert [v.path for v in violations] == ["rules"]


def test_empty_nullable_text_is_null() -> None:
    sent = {
        **oauth2_form(),
        "authentication.oAuth2.scope": "",
        "exportBehavior.customConfiguration": "   ",
        "exportBehavior.managementZone": "",
        "sendDirect.docType": "",
    }
    value = value_from_form(EXPORT_SETTINGS, sent)
    assert value["authentication"]["oAuth2"]["scope"] is None
    assert value["exportBehavior"]["customConfiguration"] is None
    assert value["exportBehavior"]["managementZone"] is None
    assert value["sendDirect"]["docType"] is None
    zone = value_from_form(
        ZONE_SETTINGS,
        {"name": "Z", "description": "  \n", "rules[0].attribute": "COUNTRY", "rules[0].value": "Austria"},
    )
    assert zone["description"] is None
    normalized = valid(EXPORT_SETTINGS, value)
    assert normalized["authentication"]["oAuth2"]["scope"] is None
    assert normalized["exportBehavior"]["customConfiguration"] is None


def test_empty_text_with_a_default_takes_the_default() -> None:
    sent = {
        **oauth2_form(),
        "endpointDefinition.contentType": "",
        "authentication.oAuth2.sendCredentials": "",
    }
    normalized = valid(EXPORT_SETTINGS, value_from_form(EXPORT_SETTINGS, sent), frozenset({ZONE_ID}))
    assert normalized["endpointDefinition"]["contentType"] == "application/json"
    assert normalized["authentication"]["oAuth2"]["sendCredentials"] == "header"


def test_empty_required_text_is_reported_at_its_path() -> None:
    sent = {**oauth2_form(), "authentication.oAuth2.clientId": "", "endpointDefinition.endpointUrl": " "}
    _, violations = validate_value(
        EXPORT_SETTINGS, value_from_form(EXPORT_SETTINGS, sent), Context(zone_ids=frozenset({ZONE_ID}))
    )
    assert {v.path for v in violations} == {
        "authentication.oAuth2.clientId",
        "endpointDefinition.endpointUrl",
    }
    items = build_form(EXPORT_SETTINGS, None, {v.path: v.message for v in violations})
    assert unplaced_errors(items, {v.path: v.message for v in violations}) == []


def test_a_multiline_custom_configuration_is_kept_as_typed() -> None:
    text = '{\n  "retries": 2,\n  "timeoutSeconds": 5\n}\n'
    sent = {**oauth2_form(), "exportBehavior.customConfiguration": text}
    value = value_from_form(EXPORT_SETTINGS, sent)
    assert value["exportBehavior"]["customConfiguration"] == text
    assert (
        valid(EXPORT_SETTINGS, value, frozenset({ZONE_ID}))["exportBehavior"]["customConfiguration"] == text
    )


def test_a_rule_with_only_its_attribute_chosen_is_kept_to_be_completed() -> None:
    """Not taken for the empty row: it comes back with its choice and its Value marked."""
    sent = {"name": "Only attribute", "rules[0].enabled": "true", "rules[0].attribute": "COUNTRY"}
    sent |= {"rules[0].operator": "EQUALS", "rules[0].value": ""}
    rules = value_from_form(ZONE_SETTINGS, sent)["rules"]
    assert [r["attribute"] for r in rules] == ["COUNTRY"]
    _, violations = validate_value(ZONE_SETTINGS, value_from_form(ZONE_SETTINGS, sent), Context())
    assert [v.path for v in violations] == ["rules[0].value"]


def test_a_row_index_no_form_would_send_is_ignored_not_a_crash() -> None:
    """Python refuses to read an integer of more than 4300 digits: such a field is no row."""
    form = {"name": "z", "rules[0].attribute": "APPLICATION_NAME", "rules[0].value": "shop"}
    form["rules[" + "9" * 5000 + "].value"] = "x"
    value = value_from_form(ZONE_SETTINGS, form)
    assert [rule["value"] for rule in value["rules"]] == ["shop"]
