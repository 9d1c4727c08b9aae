"""Settings objects with Dynatrace Settings 2.0 semantics: create (or validate, or upsert by
``externalId``), read, update with optimistic locking, delete; secrets encrypted and masked.

Outcomes are returned as ``ItemResult`` (the per-item ``{code, objectId | error}`` of the API),
never raised: a POST of several objects answers each one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import secrets as random
from collections.abc import Awaitable, Callable, Iterable, Set
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from sessionexport.settings import secrets
from sessionexport.settings.schemas import EXPORT_SCHEMA, SCHEMAS, SCOPE_ALIASES, ZONE_SCHEMA, secret_paths
from sessionexport.settings.validation import Context, Violation, validate_value
from sessionexport.store import ExternalIdTaken, Store, TooManyObjects, VersionConflict
from sessionexport.store.records import SettingsRecord


@dataclass
class ItemResult:
    code: int
    object_id: str | None = None
    message: str | None = None
    violations: list[Violation] = field(default_factory=list)
    invalid_value: Any = None

    @property
    def ok(self) -> bool:
        return self.code < 300


@dataclass(frozen=True)
class NewObject:
    schema_id: Any
    scope: Any
    value: Any
    external_id: str | None = None
    schema_version: str | None = None
    object_id: str | None = None  # with external_id: the object it replaces (when none has that external_id)


ROTATE_ATTEMPTS = 10  # re-reads of an object edited while its secrets are re-encrypted


class SettingsService:
    def __init__(
        self,
        store: Store,
        box: secrets.SecretBox,
        *,
        allow_http_loopback: bool = False,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.box = box
        self.allow_http_loopback = allow_http_loopback
        self.on_change = on_change  # told after every stored change (the exporters follow the settings)
        # Writes one at a time: each checks what others may change (an externalId's object, a
        # zone's unique name, whether a zone is in use) before it writes.
        self._writing = asyncio.Lock()

    # -- reads -------------------------------------------------------------------------------
    async def get(self, object_id: str) -> SettingsRecord | None:
        return await self.store.get_setting(object_id)

    async def get_export(self, object_id: str) -> SettingsRecord | None:
        """The user session export with this id (None: no such object, or not an export)."""
        record = await self.store.get_setting(object_id)
        return record if record is not None and record.schema_id == EXPORT_SCHEMA else None

    async def all(self, schema_id: str | None = None) -> list[SettingsRecord]:
        return await self.store.list_settings(schema_id)

    def masked_value(self, record: SettingsRecord) -> dict[str, Any]:
        return masked_value(record)

    def _old_value(self, record: SettingsRecord) -> tuple[dict[str, Any], set[str]]:
        """What an update starts from: the stored value with its secrets decrypted; or, when the
        configured keys cannot decrypt them (a lost or replaced key), with them as they are stored,
        and those: an update that keeps them (a pause, a tuning) stores them again as they were,
        never decrypted; one that enters them anew is the way out."""
        try:
            return self.plain_value(record), set()
        except secrets.SecretKeyError:
            stored: dict[str, Any] = orjson.loads(record.value)
            paths = secret_paths(SCHEMAS[record.schema_id])
            return stored, {sealed for path in paths if secrets.is_encrypted(sealed := _get(stored, path))}

    def plain_value(self, record: SettingsRecord) -> dict[str, Any]:
        """The value with its secrets decrypted: for the exporter only, never for a response."""
        return plain_value(record.schema_id, record.value, self.box)

    # -- writes ------------------------------------------------------------------------------
    async def create_all(
        self, items: Iterable[NewObject], author: str, now: int, *, validate_only: bool = False
    ) -> list[ItemResult]:
        """Each item created in turn; a validateOnly request counts the objects its earlier items
        would have created, so it answers as the same request without validateOnly would."""
        results: list[ItemResult] = []
        planned: dict[str, int] = {}
        planned_external: set[tuple[str, str]] = set()  # an item with one of these would update
        for item in items:
            schema_id = str(item.schema_id)
            external = (schema_id, item.external_id) if item.external_id is not None else None
            updates_planned = external in planned_external
            taken = planned.get(schema_id, 0) - updates_planned  # an update takes no new slot
            async with self._writing:
                result = await self._create(item, author, now, validate_only=validate_only, planned=taken)
            if validate_only and result.ok and result.object_id is None and not updates_planned:
                planned[schema_id] = planned.get(schema_id, 0) + 1
                if external is not None:
                    planned_external.add(external)
            results.append(result)
        return results

    async def create(self, item: NewObject, author: str, now: int) -> ItemResult:
        async with self._writing:
            return await self._create(item, author, now)

    async def _create(
        self,
        item: NewObject,
        author: str,
        now: int,
        *,
        validate_only: bool = False,
        planned: int = 0,
        again: bool = True,
    ) -> ItemResult:
        """One object; ``planned``: objects of its schema that a validateOnly request would have
        created before it. ``again``: whether an externalId taken meanwhile (by another process)
        makes it try once more, as the update it has become."""
        schema = SCHEMAS.get(item.schema_id) if isinstance(item.schema_id, str) else None
        if schema is None:
            # The value is not echoed: without its schema, its secrets cannot be told apart.
            return ItemResult(404, message=f"Schema {item.schema_id!r} not found")
        scope = SCOPE_ALIASES.get(item.scope) if isinstance(item.scope, str) else None
        if scope is None:
            return ItemResult(
                404,
                message=f"Scope {item.scope!r} not found: this schema allows 'environment' (alias 'tenant')",
                invalid_value=self._mask_input(schema, item.value),
            )
        if item.external_id is not None:
            existing = await self._by_external_id(schema["schemaId"], item.external_id)
            if existing is None and item.object_id is not None:  # replace that object, naming it so
                existing = await self.store.get_setting(item.object_id)
                if existing is None or existing.schema_id != schema["schemaId"]:
                    message = f"No object available for the given objectId {item.object_id!r}"
                    return ItemResult(
                        404, message=message, invalid_value=self._mask_input(schema, item.value)
                    )
            if existing is not None:
                return await self._update(
                    existing.object_id,
                    item.value,
                    None,
                    author,
                    now,
                    validate_only=validate_only,
                    external_id=item.external_id,
                )
        value, violations = await self._validate(schema, item.value, exclude=None)
        violations += _secrets_entered(schema, value)
        if violations:
            return invalid(violations, self._mask_input(schema, item.value))
        if schema["schemaId"] == ZONE_SCHEMA:
            violations = await self._unique_zone_name(value, exclude=None)
            if violations:
                return invalid(violations, value)
        object_id = _new_object_id()
        if validate_only:
            stored = len(await self.store.list_settings(schema["schemaId"]))
            if stored + planned >= schema["maxObjects"]:
                return _too_many(schema, self._mask_input(schema, item.value))
            return ItemResult(200, object_id=None)
        record = SettingsRecord(
            object_id=object_id,
            schema_id=schema["schemaId"],
            scope=scope,
            external_id=item.external_id,
            value=self._stored_json(schema, value),
            schema_version=schema["version"],
            created=now,
            modified=now,
            created_by=author,
            modified_by=author,
            version=1,
        )
        try:
            await self.store.insert_setting(record, schema["maxObjects"])
        except TooManyObjects:
            return _too_many(schema, self._mask_input(schema, item.value))
        except ExternalIdTaken:
            if not again:
                message = f"Another request created an object with externalId {item.external_id!r}; try again"
                return ItemResult(409, message=message, invalid_value=self._mask_input(schema, item.value))
            return await self._create(item, author, now, again=False)
        self.on_change()
        return ItemResult(200, object_id=object_id)

    async def update(
        self,
        object_id: str,
        new_value: Any,
        update_token: str | None,
        author: str,
        now: int,
        *,
        validate_only: bool = False,
    ) -> ItemResult:
        async with self._writing:
            return await self._update(
                object_id, new_value, update_token, author, now, validate_only=validate_only
            )

    async def _update(
        self,
        object_id: str,
        new_value: Any,
        update_token: str | None,
        author: str,
        now: int,
        *,
        validate_only: bool = False,
        external_id: str | None = None,
        again: int = 10,  # each conflict is another writer's success: each time one fewer ahead
    ) -> ItemResult:
        """``external_id``: the one the object takes (else it keeps its own). Without an
        ``update_token`` the caller asked for no lock: an object another process changed between
        the read and the write is read and written again (``again`` more times at most)."""
        record = await self.store.get_setting(object_id)
        if record is None:
            return ItemResult(404, message=f"No object available for the given objectId {object_id!r}")
        schema = SCHEMAS[record.schema_id]
        expected = (
            _version_from_token(update_token, object_id) if update_token is not None else record.version
        )
        if expected is None:
            return ItemResult(
                400, message="Invalid updateToken", violations=[Violation("updateToken", "malformed")]
            )
        if expected != record.version:
            return _conflict(object_id)
        old, sealed = self._old_value(record)
        merged, kept = _keep_unchanged_secrets(schema, new_value, old)
        value, violations = await self._validate(schema, merged, exclude=object_id)
        violations += _secrets_entered(schema, value)
        if not violations:
            violations = _resubmission_needed(schema, value, old, kept)
        if not violations and schema["schemaId"] == ZONE_SCHEMA:
            violations = await self._unique_zone_name(value, exclude=object_id)
        if violations:
            return invalid(violations, self._mask_input(schema, new_value))
        if validate_only:
            return ItemResult(200, object_id=object_id)
        updated = replace(
            record,
            external_id=record.external_id if external_id is None else external_id,
            value=self._stored_json(schema, value, sealed),
            schema_version=schema["version"],
            modified=now,
            modified_by=author,
            version=record.version + 1,
        )
        try:
            await self.store.update_setting(updated, expected_version=record.version)
        except VersionConflict:
            if update_token is not None:
                return _conflict(object_id)
            if not again:
                return _conflict(object_id, "The object kept changing while it was written; try again")
            return await self._update(
                object_id, new_value, None, author, now, external_id=external_id, again=again - 1
            )
        self.on_change()
        return ItemResult(200, object_id=object_id)

    async def delete(
        self, object_id: str, update_token: str | None, *, schema_id: str | None = None
    ) -> ItemResult:
        """``schema_id``: delete only an object of that schema (another one is not found)."""
        async with self._writing:
            return await self._delete(object_id, update_token, schema_id)

    async def _delete(self, object_id: str, update_token: str | None, schema_id: str | None) -> ItemResult:
        record = await self.store.get_setting(object_id)
        if record is None or (schema_id is not None and record.schema_id != schema_id):
            return ItemResult(404, message=f"No object available for the given objectId {object_id!r}")
        expected = None
        if update_token is not None:
            expected = _version_from_token(update_token, object_id)
            if expected is None:
                return ItemResult(
                    400, message="Invalid updateToken", violations=[Violation("updateToken", "malformed")]
                )
        for constraint in SCHEMAS[record.schema_id]["deletionConstraints"]:
            refusal = await self._deletion_checks[constraint["customValidatorId"]](object_id)
            if refusal is not None:
                return refusal
        try:
            deleted = await self.store.delete_setting(object_id, expected)
        except VersionConflict:
            return _conflict(object_id)
        if not deleted:
            return ItemResult(404, message=f"No object available for the given objectId {object_id!r}")
        self.on_change()
        return ItemResult(204, object_id=object_id)

    # -- deletion constraints (the schemas' deletionConstraints, by customValidatorId) -------
    @property
    def _deletion_checks(self) -> dict[str, Callable[[str], Awaitable[ItemResult | None]]]:
        return {
            "export-without-pending-dead-letters": self._no_pending_dead_letters,
            "zone-not-referenced": self._zone_not_referenced,
        }

    async def _no_pending_dead_letters(self, export_id: str) -> ItemResult | None:
        """Its dead letters would go with it: nothing is discarded without being asked to."""
        pending = await self.store.count_dead_letters(export_id)
        if not pending:
            return None
        return ItemResult(
            400,
            message=f"The export has {pending} pending dead letter(s): replay them, or discard them"
            f" (DELETE /api/v2/exports/{export_id}/deadletters, scope exports.manage), first;"
            " pause the export first if it keeps failing",
            violations=[Violation("", f"has {pending} pending dead letter(s): replay or discard them first")],
        )

    async def _zone_not_referenced(self, zone_id: str) -> ItemResult | None:
        users = [
            f"{value.get('endpointDefinition', {}).get('endpointUrl')} ({record.object_id})"
            for record in await self.store.list_settings(EXPORT_SCHEMA)
            if (value := orjson.loads(record.value)).get("exportBehavior", {}).get("managementZone")
            == zone_id
        ]
        if not users:
            return None
        return ItemResult(
            400,
            message=f"The management zone is used by user session export(s) {', '.join(users)}; change them first",
            violations=[Violation("", "referenced by an export configuration")],
        )

    async def rotate_secrets(self) -> int:
        """Re-encrypt every stored secret with the newest key; return how many objects changed."""
        async with self._writing:
            return await self._rotate_secrets()

    async def _rotate_secrets(self) -> int:
        """All or nothing: every secret is re-encrypted before any is written, so that one the keys
        cannot decrypt leaves every object as it was, and is named. An object changed meanwhile
        (an edit through a server) is read again and re-encrypted as it is now."""
        rotated = []
        for record in await self.store.list_settings():
            try:
                changed = self._rotated(record)
            except secrets.SecretKeyError as exc:
                raise secrets.SecretKeyError(f"{exc}; nothing was changed") from None
            if changed is not None:
                rotated.append((record, changed))
        for record, changed in rotated:
            await self._write_rotated(record, changed)
        return len(rotated)

    def _rotated(self, record: SettingsRecord) -> SettingsRecord | None:
        """The record with its secrets re-encrypted with the newest key; None when it has none."""
        value = orjson.loads(record.value)
        paths = [p for p in secret_paths(SCHEMAS[record.schema_id]) if secrets.is_encrypted(_get(value, p))]
        if not paths:
            return None
        try:
            for path in paths:
                _set(value, path, self.box.rotate(_get(value, path)))
        except secrets.SecretKeyError as exc:
            raise secrets.SecretKeyError(f"settings object {record.object_id}: {exc}") from None
        return replace(record, value=orjson.dumps(value).decode(), version=record.version + 1)

    async def _write_rotated(self, record: SettingsRecord, changed: SettingsRecord) -> None:
        for _ in range(ROTATE_ATTEMPTS):
            try:
                await self.store.update_setting(changed, expected_version=record.version)
                return
            except VersionConflict:
                fresh = await self.store.get_setting(record.object_id)
                if fresh is None:
                    return  # deleted meanwhile: nothing left to re-encrypt
                record = fresh
                try:
                    rotated = self._rotated(fresh)
                except secrets.SecretKeyError as exc:
                    raise secrets.SecretKeyError(
                        f"{exc} (changed meanwhile, with a key this command does not have); the objects"
                        " before it were re-encrypted"
                    ) from None
                if rotated is None:
                    return
                changed = rotated
        raise VersionConflict(f"settings object {record.object_id} kept changing while it was re-encrypted")

    async def check_export_value(
        self, value: Any, *, secrets_needed: bool
    ) -> tuple[dict[str, Any], list[Violation]]:
        """An export value that is not (necessarily) saved, for the test export, sample data and
        mapping. The test export sends, so its secrets must be entered again (as Dynatrace asks:
        they are never sent back); sample data and mapping send nothing and need none."""
        schema = SCHEMAS[EXPORT_SCHEMA]
        if not secrets_needed and isinstance(value, dict):
            value = copy.deepcopy(value)
            for path in secret_paths(schema):
                if _parent_is_object(value, path) and _get(value, path) in (None, "", secrets.MASK):
                    _set(value, path, "not-needed")
        normalized, violations = await self._validate(schema, value, exclude=None)
        if secrets_needed:
            violations += [
                Violation(
                    v.path, "enter the secret again to test the export (stored secrets are never sent back)"
                )
                for v in _secrets_entered(schema, normalized)
            ]
        return normalized, violations

    # -- helpers -----------------------------------------------------------------------------
    async def _validate(
        self, schema: dict[str, Any], value: Any, exclude: str | None
    ) -> tuple[dict[str, Any], list[Violation]]:
        zones = await self.store.list_settings(ZONE_SCHEMA)
        context = Context(
            zone_ids=frozenset(z.object_id for z in zones), allow_http_loopback=self.allow_http_loopback
        )
        return validate_value(schema, value, context)

    async def _by_external_id(self, schema_id: str, external_id: str) -> SettingsRecord | None:
        return next(
            (r for r in await self.store.list_settings(schema_id) if r.external_id == external_id), None
        )

    async def _unique_zone_name(self, value: dict[str, Any], exclude: str | None) -> list[Violation]:
        name = str(value.get("name", "")).strip().lower()
        for zone in await self.store.list_settings(ZONE_SCHEMA):
            if (
                zone.object_id != exclude
                and str(orjson.loads(zone.value).get("name", "")).strip().lower() == name
            ):
                return [Violation("name", f"a management zone named {value.get('name')!r} already exists")]
        return []

    def _stored_json(
        self, schema: dict[str, Any], value: dict[str, Any], sealed: Set[str] = frozenset()
    ) -> str:
        """``sealed``: secrets kept as they were stored, encrypted with a key no longer configured."""
        stored = copy.deepcopy(value)
        for path in secret_paths(schema):
            plain = _get(stored, path)
            if isinstance(plain, str) and plain not in sealed:
                _set(stored, path, self.box.encrypt(plain))
        return orjson.dumps(stored).decode()

    @staticmethod
    def _mask_input(schema: dict[str, Any], value: Any) -> Any:
        """The caller's value for an error response, its secrets masked (never echoed back)."""
        if not isinstance(value, dict):
            return value
        masked = copy.deepcopy(value)
        for path in secret_paths(schema):
            if _get(masked, path) is not None:
                _set(masked, path, secrets.MASK)
        return masked


def update_token(record: SettingsRecord) -> str:
    return base64.urlsafe_b64encode(f"vu1;{record.object_id};{record.version}".encode()).decode()


def summary(record: SettingsRecord, value: dict[str, Any]) -> str:
    if record.schema_id == EXPORT_SCHEMA:
        return str(value.get("endpointDefinition", {}).get("endpointUrl", ""))
    return str(value.get("name", ""))


def _version_from_token(token: str, object_id: str) -> int | None:
    try:
        tag, token_object, version = base64.urlsafe_b64decode(token.encode()).decode().split(";")
        if tag != "vu1" or token_object != object_id:
            return None
        return int(version)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _new_object_id() -> str:
    return base64.urlsafe_b64encode(b"se1\x00" + random.token_bytes(24)).decode().rstrip("=")


def invalid(violations: list[Violation], invalid_value: Any = None) -> ItemResult:
    """The answer for a value with ``violations`` (``invalid_value``: what was sent, masked)."""
    return ItemResult(
        400,
        message=f"{len(violations)} constraint violation(s)",
        violations=violations,
        invalid_value=invalid_value,
    )


def _conflict(
    object_id: str,
    message: str = "The object was changed since the given updateToken was issued; read it again and retry",
) -> ItemResult:
    return ItemResult(409, object_id=object_id, message=message)


def _too_many(schema: dict[str, Any], value: Any) -> ItemResult:
    return invalid(
        [
            Violation(
                "",
                f"at most {schema['maxObjects']} objects of {schema['schemaId']} are allowed; "
                "delete one before adding another",
            )
        ],
        value,
    )


def _secrets_entered(schema: dict[str, Any], value: dict[str, Any]) -> list[Violation]:
    """A secret must be a real secret, not the mask (the mask only means "keep the stored one")."""
    return [
        Violation(".".join(p), "enter the secret: none is stored to keep (the mask only keeps a stored one)")
        for p in secret_paths(schema)
        if _get(value, p) == secrets.MASK
    ]


def _keep_unchanged_secrets(
    schema: dict[str, Any], new_value: Any, old: dict[str, Any]
) -> tuple[Any, list[tuple[str, ...]]]:
    """Where the caller sent the mask (or nothing) for a stored secret, take the stored one."""
    if not isinstance(new_value, dict):
        return new_value, []
    merged = copy.deepcopy(new_value)
    kept = []
    for path in secret_paths(schema):
        sent, stored = _get(merged, path), _get(old, path)
        if stored is not None and sent in (None, secrets.MASK) and _parent_is_object(merged, path):
            _set(merged, path, stored)
            kept.append(path)
    return merged, kept


def _resubmission_needed(
    schema: dict[str, Any], value: dict[str, Any], old: dict[str, Any], kept: Iterable[tuple[str, ...]]
) -> list[Violation]:
    """A kept secret is only kept when nothing it protects changed (else it could be sent elsewhere)."""
    kept = [path for path in kept if _get(value, path) is not None]  # still in use after preconditions
    if not kept or schema["schemaId"] != EXPORT_SCHEMA:
        return []
    changed = [
        what
        for what, fingerprint in (
            ("the endpoint URL", _endpoint_url),
            ("the authentication settings", _auth_settings),
        )
        if fingerprint(schema, value) != fingerprint(schema, old)
    ]
    if not changed:
        return []
    reason = (
        f"{' and '.join(changed)} changed: re-enter the secret (a stored one is never sent to a new place)"
    )
    return [Violation(".".join(p), reason) for p in kept]


def _endpoint_url(schema: dict[str, Any], value: dict[str, Any]) -> Any:
    return value.get("endpointDefinition", {}).get("endpointUrl")


def _auth_settings(schema: dict[str, Any], value: dict[str, Any]) -> Any:
    """The authentication settings, their secrets left out."""
    view = {"authentication": copy.deepcopy(value.get("authentication", {}))}
    for path in secret_paths(schema):
        if path[0] == "authentication" and _get(view, path) is not None:
            _set(view, path, None)
    return view


def _parent_is_object(value: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = value
    for name in path[:-1]:
        if not isinstance(node, dict):
            return False
        node = node.get(name)
    return isinstance(node, dict)


def plain_value(schema_id: str, stored: str, box: secrets.SecretBox) -> dict[str, Any]:
    """A stored value with its secrets decrypted (``SecretKeyError`` when ``box`` cannot)."""
    value: dict[str, Any] = orjson.loads(stored)
    for path in secret_paths(SCHEMAS[schema_id]):
        encrypted = _get(value, path)
        if secrets.is_encrypted(encrypted):
            _set(value, path, box.decrypt(encrypted))
    return value


def masked_value(record: SettingsRecord) -> dict[str, Any]:
    """The value for any response, and for whatever needs no secret: every secret replaced by the
    mask (no key is needed to read it)."""
    value: dict[str, Any] = orjson.loads(record.value)
    for path in secret_paths(SCHEMAS[record.schema_id]):
        if _get(value, path) is not None:
            _set(value, path, secrets.MASK)
    return value


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _set(value: dict[str, Any], path: tuple[str, ...], new: Any) -> None:
    for name in path[:-1]:
        value = value[name]
    value[path[-1]] = new
