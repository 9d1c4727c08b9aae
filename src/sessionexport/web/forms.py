"""HTML forms from the settings schemas, and form data back into settings values. No I/O.

The schema is the one source of a field's label, help text, kind, options and precondition: the
form shows what the API accepts, and the settings service validates what the form sends, so the
UI holds no second copy of a rule. A field's form name is its path in the value
(``authentication.oAuth2.clientId``, ``rules[0].value``), which is also the path of the API's
constraint violations, so each violation lands next to its field.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from sessionexport.settings.objects import ItemResult
from sessionexport.settings.secrets import MASK

Kind = Literal["text", "textarea", "secret", "boolean", "enum", "setting"]
Condition = tuple[str, Any]  # (path of a field, the value it must have)

_MULTILINE = frozenset({"customConfiguration", "description"})
REMOVE = "_remove"  # a list item's "remove this item" checkbox


@dataclass
class Field:
    name: str
    label: str
    help: str
    kind: Kind
    value: Any = None
    options: list[tuple[str, str]] = field(default_factory=list)
    required: bool = False
    when: list[Condition] = field(default_factory=list)
    error: str | None = None
    secret_stored: bool = False  # leaving the field empty keeps the stored secret


@dataclass
class Section:
    name: str
    label: str
    children: list[Field | Section | ListField]
    when: list[Condition] = field(default_factory=list)
    error: str | None = None


@dataclass
class ListField:
    """A list of objects (a zone's rules): its items, plus one blank item to fill in."""

    name: str
    label: str
    items: list[Section]
    blank: Section
    error: str | None = None


@dataclass
class ObjectForm:
    """One settings object's form on a page (``object_id`` NEW for the form that adds one), with
    the violations of its last submission on their fields and the rest in ``errors``."""

    object_id: str
    title: str
    fields: list[Field | Section | ListField]
    errors: list[str] = field(default_factory=list)
    update_token: str | None = None
    open: bool = False
    refused: bool = False  # what it shows was refused: its fields, or ``errors``, say why


NEW = "new"
F = TypeVar("F", bound=ObjectForm)


def object_form(
    kind: type[F],
    schema: dict[str, Any],
    object_id: str,
    title: str,
    value: Mapping[str, Any] | None,
    result: ItemResult | None = None,
    settings_options: list[tuple[str, str]] | None = None,
) -> F:
    errors = {v.path: v.message for v in result.violations} if result is not None else {}
    fields = build_form(schema, value, errors, settings_options)
    messages = unplaced_errors(fields, errors)
    if result is not None and not result.violations and result.message:
        messages.append(result.message)  # not found, changed meanwhile (409), too many objects
    return kind(object_id, title, fields, messages, refused=result is not None)


def build_form(
    schema: dict[str, Any],
    value: Mapping[str, Any] | None,
    errors: Mapping[str, str] | None = None,
    settings_options: list[tuple[str, str]] | None = None,
) -> list[Field | Section | ListField]:
    """The form of a schema, filled with ``value`` (secrets as the API masks them)."""
    builder = _Builder(schema, dict(errors or {}), settings_options or [])
    return builder.properties(schema["properties"], value or {}, "", [])


def value_from_form(
    schema: dict[str, Any], form: Mapping[str, str], *, keep_secrets: bool = False
) -> dict[str, Any]:
    """The settings value a submitted form stands for. With ``keep_secrets`` (a stored object's
    form), an empty secret field becomes the mask, which the settings service reads as "keep the
    stored secret" (and refuses when what the secret protects changed)."""
    return _read_object(schema, schema["properties"], form, "", keep_secrets)


def unplaced_errors(form_fields: list[Field | Section | ListField], errors: Mapping[str, str]) -> list[str]:
    """Violations that belong to no field of the form (shown above it)."""
    placed = set(_names(form_fields))
    return [
        f"{path}: {message}" if path else message for path, message in errors.items() if path not in placed
    ]


# -- building --------------------------------------------------------------------------------------
@dataclass
class _Builder:
    schema: dict[str, Any]
    errors: dict[str, str]
    settings_options: list[tuple[str, str]]

    def properties(
        self, properties: dict[str, Any], value: Mapping[str, Any], prefix: str, when: list[Condition]
    ) -> list[Field | Section | ListField]:
        return [
            self.property(name, prop, value.get(name), _join(prefix, name), when + _conditions(prop, prefix))
            for name, prop in properties.items()
        ]

    def property(self, name: str, prop: dict[str, Any], value: Any, path: str, when: list[Condition]) -> Any:
        kind = prop["type"]
        if kind == "list":
            return self.list_field(prop, value if isinstance(value, list) else [], path)
        if isinstance(kind, dict) and kind["$ref"].startswith("#/types/"):
            type_ = self.schema["types"][kind["$ref"].removeprefix("#/types/")]
            children = self.properties(
                type_["properties"], value if isinstance(value, dict) else {}, path, []
            )
            return Section(path, prop["displayName"], children, when, self.errors.get(path))
        return self.field(name, prop, value, path, when)

    def field(self, name: str, prop: dict[str, Any], value: Any, path: str, when: list[Condition]) -> Field:
        kind = _kind(name, prop)
        options: list[tuple[str, str]] = []
        if kind == "enum":
            enum = self.schema["enums"][prop["type"]["$ref"].removeprefix("#/enums/")]
            options = [(item["value"], item["displayName"]) for item in enum["items"]]
        elif kind == "setting":
            options = self.settings_options
        error = self.errors.get(path)
        if error is not None and kind in ("enum", "setting") and value is None:
            error = "choose one"  # the API's words are "must not be null": the form sent nothing
        if value is None and kind == "boolean":
            value = prop.get("default", False)
        elif value is None and kind in ("enum", "text", "textarea"):
            value = prop.get("default")
        return Field(
            name=path,
            label=prop["displayName"],
            help=prop.get("description", ""),
            kind=kind,
            value=None if kind == "secret" else value,
            options=options,
            required=not prop.get("nullable", False) and kind in ("text", "textarea", "secret", "enum"),
            when=when,
            error=error,
            # Not when it was refused: there is none to keep, or it may not be kept (a new place).
            secret_stored=kind == "secret" and value == MASK and path not in self.errors,
        )

    def list_field(self, prop: dict[str, Any], items: list[Any], path: str) -> ListField:
        type_ = self.schema["types"][prop["items"]["type"]["$ref"].removeprefix("#/types/")]

        def item(index: int, value: Any) -> Section:
            item_path = f"{path}[{index}]"
            children = self.properties(
                type_["properties"], value if isinstance(value, dict) else {}, item_path, []
            )
            return Section(
                item_path, f"{type_['displayName']} {index + 1}", children, [], self.errors.get(item_path)
            )

        error, least = self.errors.get(path), prop.get("minObjects", 0)
        if error is not None and len(items) < least:  # the API counts items, the form offers a blank one
            noun = type_["displayName"].lower()
            error = f"fill in at least one {noun}" if least == 1 else f"fill in at least {least} {noun}s"
        return ListField(
            path,
            prop["displayName"],
            [item(i, v) for i, v in enumerate(items)],
            item(len(items), {}),
            error,
        )


def _kind(name: str, prop: dict[str, Any]) -> Kind:
    kind = prop["type"]
    if isinstance(kind, dict):
        return "enum"
    if kind == "text" and name in _MULTILINE:
        return "textarea"
    if kind in ("boolean", "secret", "setting"):
        return kind  # type: ignore[no-any-return]
    return "text"


def _conditions(prop: dict[str, Any], prefix: str) -> list[Condition]:
    """A precondition (EQUALS, or AND of them, on siblings) as conditions on full paths."""
    precondition = prop.get("precondition")
    if not precondition:
        return []
    parts = precondition["preconditions"] if precondition["type"] == "AND" else [precondition]
    return [(_join(prefix, p["property"]), p["expectedValue"]) for p in parts]


def field_labels(form_fields: list[Field | Section | ListField]) -> dict[str, str]:
    """What the form calls each of its fields and sections, by path (a violation's path): the
    labels of the sections it is in and its own ("Basic authentication / Password")."""
    return dict(_labelled(form_fields, ""))


def _labelled(items: list[Field | Section | ListField], within: str) -> Iterator[tuple[str, str]]:
    for item in items:
        label = f"{within} / {item.label}" if within else item.label
        yield item.name, label
        if isinstance(item, Section):
            yield from _labelled(item.children, label)
        elif isinstance(item, ListField):
            yield from _labelled([*item.items, item.blank], label)


def _names(items: list[Field | Section | ListField]) -> list[str]:
    return [name for name, _ in _labelled(items, "")]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# -- reading ---------------------------------------------------------------------------------------
def _read_object(
    schema: dict[str, Any], properties: dict[str, Any], form: Mapping[str, str], prefix: str, keep: bool
) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for name, prop in properties.items():
        path = _join(prefix, name)
        kind = prop["type"]
        if kind == "list":
            value[name] = _read_list(schema, prop, form, path, keep)
        elif isinstance(kind, dict) and kind["$ref"].startswith("#/types/"):
            type_ = schema["types"][kind["$ref"].removeprefix("#/types/")]
            value[name] = _read_object(schema, type_["properties"], form, path, keep)
        else:
            value[name] = _read_scalar(_kind(name, prop), prop, form.get(path), keep)
    return value


def _read_scalar(kind: Kind, prop: dict[str, Any], given: str | None, keep: bool) -> Any:
    if kind == "boolean":
        return given is not None and given.lower() in ("true", "on", "1")
    if kind == "secret":
        return given or (MASK if keep else "")
    text = (given or "").strip() if kind != "textarea" else (given or "")
    if not text.strip():
        return None if prop.get("nullable") or "default" in prop or kind in ("enum", "setting") else ""
    return text


def _read_list(
    schema: dict[str, Any], prop: dict[str, Any], form: Mapping[str, str], path: str, keep: bool
) -> list[dict[str, Any]]:
    type_ = schema["types"][prop["items"]["type"]["$ref"].removeprefix("#/types/")]
    pattern = re.compile(re.escape(path) + r"\[(\d{1,4})\]\.")  # a longer index is no row of a form
    indexes = sorted({int(m.group(1)) for key in form if (m := pattern.match(key))})
    items = []
    for index in indexes:
        item_path = f"{path}[{index}]"
        if form.get(f"{item_path}.{REMOVE}") or _blank_item(type_["properties"], form, item_path):
            continue  # ticked for removal, or the empty row offered for a new item left empty
        items.append(_read_object(schema, type_["properties"], form, item_path, keep))
    return items


def _blank_item(properties: dict[str, Any], form: Mapping[str, str], path: str) -> bool:
    """Nothing typed or chosen: its texts empty and its choices without a default left unchosen
    (a row with only an attribute chosen is a rule to complete, not the empty row)."""
    return all(
        not (form.get(_join(path, name)) or "").strip()
        for name, prop in properties.items()
        if prop["type"] == "text" or (isinstance(prop["type"], dict) and "default" not in prop)
    )
