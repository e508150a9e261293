"""README's command table against the commands themselves: every command and option it names exists."""

from __future__ import annotations

import re

import click

from newsletter.cli import cli
from tests.campaign_helpers import ROOT


def _rows() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    return re.findall(r"^\| `(newsletter [^|]*?)` \|", text, re.MULTILINE)


def _command(words: list[str]) -> tuple[click.Command, list[str]]:
    """The deepest command the words name, and the words after it."""
    command: click.Command = cli
    while words and isinstance(command, click.Group) and words[0] in command.commands:
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_every_command_and_option_in_the_readme_table_exists():
    rows = _rows()
    assert len(rows) > 20
    checked = 0
    for row in rows:
        # a row may name several commands: "`a PATH` / `pause` / `resume`" share the first's group
        parts = [p.strip(" `") for p in row.split("` / `")]
        first = parts[0].split()[1:]
        group_words = first[:-1] if len(first) > 1 else first
        for index, part in enumerate(parts):
            words = part.split() if index == 0 else [*group_words[:1], *part.split()]
            if words and words[0] == "newsletter":
                words = words[1:]
            command, rest = _command(words)
            assert command is not cli or rest[0].startswith("--"), f"no command for {part!r}"
            names = {opt for param in command.params for opt in getattr(param, "opts", [])}
            for option in re.findall(r"--[a-z][a-z-]*", " ".join(rest)):
                assert option in names, f"README: {part!r} names {option}, which `{command.name}` lacks"
                checked += 1
    assert checked > 10


def test_campaign_commands_have_a_help_text():
    group = cli.commands["campaign"]
    for name, command in group.commands.items():
        assert command.help, f"campaign {name} has no help"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"campaign {name} {param.opts[0]} has no help"
