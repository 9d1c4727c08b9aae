"""Management zones: which sessions an export restricted to a zone sends. No I/O.

A session is in a zone when any enabled rule matches it. Application rules match the
applications of the session's user actions (so a session is in the zone when at least one of its
user actions belongs to a matching application); the others match session attributes.

``REGEX`` rules run on RE2, whose matching takes time linear in the text: a rule such as
``^(a+)+$`` must not let a session's attributes (sent by anyone who may ingest) hold the exporter
or the server for minutes, as a backtracking engine would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import re2

from sessionexport.store.records import LogEntry

_APPLICATION_ID = re.compile(r"^[A-Z_]*APPLICATION-[0-9A-Fa-f]+$")


@dataclass(frozen=True, slots=True)
class Rule:
    attribute: str
    operator: str
    value: str
    case_sensitive: bool = False

    def matcher(self) -> Callable[[str], bool]:
        if self.operator == "REGEX":
            pattern = compile_regex(self.value, self.case_sensitive)
            return lambda text: pattern.search(text) is not None
        wanted = self.value if self.case_sensitive else self.value.casefold()

        def fold(text: str) -> str:
            return text if self.case_sensitive else text.casefold()

        if self.operator == "CONTAINS":
            return lambda text: wanted in fold(text)
        if self.operator == "BEGINS_WITH":
            return lambda text: fold(text).startswith(wanted)
        return lambda text: fold(text) == wanted


def compile_regex(pattern: str, case_sensitive: bool = True) -> Any:
    """The RE2 pattern; ``re2.error`` when RE2 cannot take it (e.g. backreferences, lookarounds)."""
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # the error is raised, and said where the rule is checked
    return re2.compile(pattern, options)


def regex_problem(pattern: str) -> str | None:
    """Why a rule's pattern cannot be used (None: it can)."""
    try:
        compile_regex(pattern)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        return f"not a valid regular expression (RE2 syntax: no backreferences or lookarounds): {reason}"
    return None


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
