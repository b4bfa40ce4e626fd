"""The README is the operators' manual: it must name every setting and every command the CLI has."""

from __future__ import annotations

from pathlib import Path

import click

from server.cli import main
from server.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented_in_the_readme() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert missing == []


def test_every_command_is_documented_in_the_readme() -> None:
    def commands(group: click.Group, prefix: str) -> list[str]:
        found = []
        for name, command in group.commands.items():
            if isinstance(command, click.Group):
                found += commands(command, f"{prefix}{name} ")
            else:
                found.append(f"{prefix}{name}")
        return found

    def documented(command: str) -> bool:
        # "moderation models activate" may be written "moderation models list` / `activate VERSION`".
        group, _, name = command.rpartition(" ")
        return any(group in line and name in line for line in README.splitlines())

    missing = [c for c in commands(main, "moderation ") if not documented(c)]
    assert missing == []
