"""The ``filter`` and ``sort`` of ``GET /api/v2/settings/objects``.

A filter is a small expression language:

    value.endpointDefinition.usePost = true and (author = 'ci' or modified > 1700000000000)

Comparisons ``= != < <= > >=`` between a field path and a literal ('text' with '' for a quote,
numbers, true, false, null), combined with ``and``, ``or``, ``not`` and parentheses.

A sort is a comma-separated list of the same fields (``created``, ``modified``, ``createdBy``,
``modifiedBy``, ``author``, ``value.<path>``), each ascending or, with a leading ``-``,
descending (``sort=-modified,value.endpointDefinition.endpointUrl``). Objects without the value
come last either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

MAX_LENGTH = 1024
MAX_DEPTH = 5

_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><=|>=|!=|=|<|>)"
    r"|(?P<paren>[()])|(?P<word>[A-Za-z_][\w.]*))"
)

Predicate = Callable[[dict[str, Any]], bool]
Sorter = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
SORT_FIELDS = ("created", "modified", "createdBy", "modifiedBy", "author")


class FilterError(ValueError):
    pass


def parse_filter(text: str) -> Predicate:
    if len(text) > MAX_LENGTH:
        raise FilterError(f"filter is longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text))
    predicate = parser.expression(0)
    if parser.peek() is not None:
        raise FilterError(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return predicate


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise FilterError(
                f"cannot read the filter at position {position}: {text[position : position + 20]!r}"
            )
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise FilterError("the filter ends too early")
        self.index += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token and token[0] == "word" and token[1].lower() == word:
            self.index += 1
            return True
        return False

    def expression(self, depth: int) -> Predicate:
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests deeper than {MAX_DEPTH}")
        terms = [self.conjunction(depth)]
        while self.keyword("or"):
            terms.append(self.conjunction(depth))
        return terms[0] if len(terms) == 1 else lambda obj: any(t(obj) for t in terms)

    def conjunction(self, depth: int) -> Predicate:
        terms = [self.unary(depth)]
        while self.keyword("and"):
            terms.append(self.unary(depth))
        return terms[0] if len(terms) == 1 else lambda obj: all(t(obj) for t in terms)

    def unary(self, depth: int) -> Predicate:
        if self.keyword("not"):
            inner = self.unary(depth)
            return lambda obj: not inner(obj)
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.expression(depth + 1)
            if self.take() != ("paren", ")"):
                raise FilterError("missing ')'")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        kind, path = self.take()
        if kind != "word":
            raise FilterError(f"expected a field name, got {path!r}")
        kind, op = self.take()
        if kind != "op":
            raise FilterError(f"expected a comparison after {path!r}, got {op!r}")
        literal = _literal(self.take())
        keys = path.split(".")
        compare = _COMPARE[op]
        return lambda obj: compare(_lookup(obj, keys), literal)


def _literal(token: tuple[str, str]) -> Any:
    kind, text = token
    if kind == "string":
        return text[1:-1].replace("''", "'")
    if kind == "number":
        return float(text) if "." in text else int(text)
    if kind == "word" and text.lower() in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text.lower()]
    raise FilterError(f"expected a value ('text', a number, true, false or null), got {text!r}")


def _lookup(obj: Any, keys: list[str]) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _ordered(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        try:
            return left is not None and right is not None and op(left, right)
        except TypeError:
            return False

    return compare


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": _ordered(lambda a, b: a < b),
    "<=": _ordered(lambda a, b: a <= b),
    ">": _ordered(lambda a, b: a > b),
    ">=": _ordered(lambda a, b: a >= b),
}


def parse_sort(text: str) -> Sorter:
    """The objects in the order ``text`` asks for (a stable sort: ties keep their order)."""
    order: list[tuple[list[str], bool]] = []
    for part in text.split(","):
        # '+' in a query string arrives as a space: "+modified" is " modified"
        field = part.strip().removeprefix("+").strip()
        descending = field.startswith("-")
        field = field.removeprefix("-")
        if field not in SORT_FIELDS and not (field.startswith("value.") and len(field) > len("value.")):
            raise FilterError(f"cannot sort by {field!r}: use {', '.join(SORT_FIELDS)} or value.<path>")
        order.append((field.split("."), descending))

    def sort(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for keys, descending in reversed(order):
            objects = sorted(
                objects, key=lambda obj: _sort_key(_lookup(obj, keys), descending), reverse=descending
            )
        return objects

    return sort


def _sort_key(value: Any, descending: bool) -> tuple[int, Any]:
    if isinstance(value, bool | int | float):
        return 0, value
    if isinstance(value, str):
        return 1, value
    return (-1 if descending else 2), ""  # absent, null, objects and lists: last
