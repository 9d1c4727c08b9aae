"""``--help`` reads whole in an 80-column terminal (and through a pipe, which has no width):
every option's names and environment variable in full, every command's summary unclipped."""

from __future__ import annotations

import re

import pytest
from tests.unit.test_cli_environment import options
from typer.testing import CliRunner

from sessionexport import cli

COMMANDS = sorted({path for path, _ in options()})
GROUPS = ["", "tokens", "secrets", "received", "export"]


def help_text(path: str) -> str:
    result = CliRunner().invoke(cli.app, [*path.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", COMMANDS)
def test_every_option_and_its_variable_are_shown_whole(path: str) -> None:
    shown = help_text(path)
    words = set(re.findall(r"[\w-]+", shown))
    for where, option in options():
        if where == path:
            assert {*option.opts, *option.secondary_opts} <= words, option.opts
            assert option.envvar in words, option.envvar
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert "…" not in shown


@pytest.mark.parametrize("path", GROUPS)
def test_every_command_summary_is_whole(path: str) -> None:
    listing = help_text(path).split("Commands:", 1)[1]
    clipped = [line for line in listing.splitlines() if line.endswith("...")]
    assert clipped == []
