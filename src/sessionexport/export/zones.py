"""Management zones: which sessions an export restricted to a zone sends. No I/O.

A session is in a zone when any enabled rule matches it. Application rules match the
applications of the session's user actions (so a session is in the zone when at least one of its
user actions belongs to a matching application); the others match session attributes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sessionexport.store.records import LogEntry

_APPLICATION_ID = re.compile(r"^[A-Z_]*APPLICATION-[0-9A-Fa-f]+$")


@dataclass(frozen=True, slots=True)
class Rule:
    attribute: str
    operator: str
    value: str
    case_sensitive: bool = False

    def matcher(self) -> Callable[[str], bool]:
        flags = 0 if self.case_sensitive else re.IGNORECASE
        if self.operator == "REGEX":
            pattern = re.compile(self.value, flags)
            return lambda text: pattern.search(text) is not None
        wanted = self.value if self.case_sensitive else self.value.casefold()

        def fold(text: str) -> str:
            return text if self.case_sensitive else text.casefold()

        if self.operator == "CONTAINS":
            return lambda text: wanted in fold(text)
        if self.operator == "BEGINS_WITH":
            return lambda text: fold(text).startswith(wanted)
        return lambda text: fold(text) == wanted


class Zone:
    def __init__(self, rules: Iterable[Rule]) -> None:
        self._checks = [(rule.attribute, rule.matcher()) for rule in rules]

    def contains(self, entry: LogEntry) -> bool:
        return any(match(value) for attribute, match in self._checks for value in _values(entry, attribute))


def zone_from_value(value: dict[str, Any]) -> Zone:
    return Zone(
        Rule(r["attribute"], r["operator"], r["value"], r.get("caseSensitive", False))
        for r in value.get("rules", ())
        if r.get("enabled", True)
    )


def _values(entry: LogEntry, attribute: str) -> Iterable[str]:
    if attribute == "APPLICATION_NAME":
        return [a for a in entry.applications if not _APPLICATION_ID.match(a)]
    if attribute == "APPLICATION_ID":
        return [a for a in entry.applications if _APPLICATION_ID.match(a)]
    single = {
        "APPLICATION_TYPE": entry.application_type,
        "USER_TYPE": entry.user_type,
        "COUNTRY": entry.country,
    }
    value = single.get(attribute)
    return [value] if value else []
