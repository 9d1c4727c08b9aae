"""Versioned schema migrations, kept as numbered ``.sql`` files per backend in ``sql/<dialect>/``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations_for(dialect: str, package: str = "sessionexport.store") -> list[Migration]:
    """All migrations of a backend, in version order (``package`` holds the ``sql/`` folder)."""
    folder = resources.files(package) / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 1..n without gaps, found {versions}")
    return found


def pending(dialect: str, applied: set[int], package: str = "sessionexport.store") -> list[Migration]:
    return [m for m in migrations_for(dialect, package) if m.version not in applied]


def foreign_migrations(
    dialect: str, applied: dict[int, str], package: str = "sessionexport.store"
) -> list[str]:
    """The applied migrations (version: name) that are not ``package``'s: another component's
    history in the same table (the session store's and the receiver's share their numbers) must
    not pass for this one's."""
    known = {m.version: m.name for m in migrations_for(dialect, package)}
    return [f"{v}_{name}" for v, name in sorted(applied.items()) if known.get(v, name) != name]


def listed(migrations: list[str], shown: int = 3) -> str:
    more = len(migrations) - shown
    return ", ".join(migrations[:shown]) + (f" and {more} more" if more > 0 else "")


class NoSchema(Exception):
    """Opened to read what is there, the database holds no schema of this store: a wrong one."""

    def __init__(self) -> None:
        super().__init__(
            "it holds no data of this store (a wrong database or path?); nothing was created there"
        )


class SchemaTooNew(Exception):
    """The database was upgraded by a newer release: this one's SQL may no longer fit it."""

    def __init__(self, version: int, known: int) -> None:
        super().__init__(
            f"its schema is at version {version}, newer than this release of sessionexport knows"
            f" ({known}): a newer release upgraded it; run that release (or a later one) here too"
        )


def refuse_newer(dialect: str, applied: set[int], package: str = "sessionexport.store") -> None:
    """``SchemaTooNew`` when ``applied`` holds a version this release has no migration for."""
    known = len(migrations_for(dialect, package))
    if applied and max(applied) > known:
        raise SchemaTooNew(max(applied), known)
