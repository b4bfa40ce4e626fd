"""The reference (docs/reference.md) is the operators' manual: it must name every setting and every command the CLI
has. docs/architecture.md lists the policy's reasons, in order. The README links to every page of docs/, and every
link between them leads to a file and a heading that exist."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import click
from pydantic import TypeAdapter

from moderation.reasons import Reason
from server.cli import main
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


def test_every_setting_is_documented_in_the_reference() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in REFERENCE]
    assert missing == []


def test_every_command_is_documented_in_the_reference() -> None:
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
        return any(group in line and name in line for line in REFERENCE.splitlines())

    missing = [c for c in commands(main, "moderation ") if not documented(c)]
    assert missing == []


def test_the_command_tables_options_are_each_commands_own_as_help_writes_them() -> None:
    """A new user's report: the table wrote `--no-body` where `--help` shows `--body/--no-body`. Each row names
    its command's options exactly, an on/off pair as one `--x/--no-x`, and no option the command lacks."""
    table = REFERENCE[REFERENCE.index("## Command line") : REFERENCE.index("## Settings")]
    checked = set()
    # A row of several commands (`moderation models list` / `activate VERSION` / ...) has backticks inside its
    # first cell and is not matched: none of those commands has an option.
    for cell in re.findall(r"^\| `([^`]*)` \|", table, flags=re.MULTILINE):
        path = list(itertools.takewhile(lambda word: re.fullmatch(r"[a-z][a-z-]*", word), cell.split()))
        command: click.Command = main
        for name in path[1:]:
            assert isinstance(command, click.Group), cell
            command = command.commands[name]
        options = [param for param in command.params if isinstance(param, click.Option)]
        written = set(re.findall(r"--[a-z][a-z-]*(?:/--[a-z][a-z-]*)?", cell))
        assert written == {"/".join([*option.opts, *option.secondary_opts]) for option in options}, cell
        checked.add(command)

    def with_options(group: click.Group) -> set[click.Command]:
        found = set()
        for command in group.commands.values():
            if isinstance(command, click.Group):
                found |= with_options(command)
            elif any(isinstance(param, click.Option) for param in command.params):
                found.add(command)
        return found

    assert with_options(main) <= checked


def test_the_policy_table_lists_every_reason_of_the_policy_in_order() -> None:
    table = ARCHITECTURE[ARCHITECTURE.index("**The policy**") :].split("\n\n")[1]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE)
    assert documented == [reason.value for reason in Reason]


def test_the_env_example_shows_the_real_defaults() -> None:
    """Its header says a commented-out `# KEY=value` line shows the default: uncommenting one must change nothing."""
    env_example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    shown = dict(
        line[2:].split("=", 1) for line in env_example.splitlines() if re.fullmatch(r"# [A-Z][A-Z0-9_]*=\S*", line)
    )
    fields = {name.upper(): field for name, field in Settings.model_fields.items()}
    checked, wrong = 0, []
    for key, value in shown.items():
        field = fields.get(key)
        if field is None or field.default is None:  # compose-only settings; "unset" defaults are described in words
            continue
        checked += 1
        assert field.annotation is not None, key
        if TypeAdapter(field.annotation).validate_python(value) != field.default:
            wrong.append(f"{key}={value} (default {field.default!r})")
    assert checked > 20
    assert wrong == []


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> list[str]:
    """The lines of a markdown file, those of fenced code blocks blanked (a `# comment` there is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        fence = re.match(r"\s*(```|~~~)", line) is not None
        fenced ^= fence
        lines.append("" if fenced or fence else line)
    return lines


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a markdown file: the text as shown, lower case, punctuation dropped
    but for hyphens and underscores, spaces as hyphens; a repeated one gets -1, -2..."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose(path.read_text()):
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        shown = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\- ]", "", shown.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_link_between_the_readme_and_docs_leads_to_a_file_and_heading_that_exist() -> None:
    """The README was split into pages under docs/ (a new user's report): a section moved again, or a heading
    renamed, must not leave a link behind, in either direction."""
    broken = []
    for page in DOCS:
        for number, line in enumerate(_prose(page.read_text()), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                path, _, anchor = target.partition("#")
                linked = (page.parent / path).resolve() if path else page
                if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert broken == []


def test_the_readme_links_every_page_in_docs() -> None:
    listed = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", README))
    assert listed == {page.name for page in DOCS[1:]}
