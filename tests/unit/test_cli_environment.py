"""Every option of every command can be set through the environment, under a name that means one
thing only: SESSIONEXPORT_<OPTION>, with the receiver's, the checker's and the demo's options
under their own prefix (their --port, --data-dir or --basic are not the server's)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import typer

from sessionexport import cli

PREFIXES = {
    "receive": "SESSIONEXPORT_RECEIVER_",
    "received": "SESSIONEXPORT_RECEIVER_",
    "check-endpoint": "SESSIONEXPORT_CHECK_",
    "demo": "SESSIONEXPORT_DEMO_",
}


def options() -> list[tuple[str, Any]]:
    """(command path, option) for every option of every command."""
    found: list[tuple[str, Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
            return
        found.extend(
            (" ".join(path), p) for p in command.params if p.name != "help" and p.param_type_name == "option"
        )

    walk(typer.main.get_command(cli.app), [])
    return found


def test_every_option_has_an_environment_variable() -> None:
    missing = [(path, option.opts) for path, option in options() if not option.envvar]
    assert missing == []
    assert len(options()) > 60


def test_each_environment_variable_means_one_option() -> None:
    meanings: dict[str, set[str]] = defaultdict(set)
    for path, option in options():
        group = PREFIXES.get(path.split()[0], "SESSIONEXPORT_")
        assert option.envvar.startswith(group), (path, option.envvar)
        meanings[option.envvar].add(f"{group}:{option.name}")
    assert {name: m for name, m in meanings.items() if len(m) > 1} == {}
