"""The settings, told three ways that must agree: ``tofu serve --help`` (grouped, defaults in
their units), docs/settings.md (generated from the same table, checked for staleness here) and
``tofu config`` (the effective values)."""

from __future__ import annotations

import json
import re

import pytest

from tofu.cli import main
from tofu.config import (
    GROUPS,
    SETTINGS,
    UNITS,
    Config,
    Setting,
    format_bytes,
    parse_bytes,
    settings_markdown,
)

from .support.servers import ROOT, SAMPLES

SETTINGS_DOC = ROOT / "docs" / "settings.md"


def command_output(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    try:
        main(args)
    except SystemExit as exited:  # --help exits
        assert exited.code == 0
    return capsys.readouterr().out


def flat(text: str) -> str:
    """Help text with argparse's line wrapping undone."""
    return " ".join(text.split())


def group_sections(help_text: str) -> dict[str, str]:
    """``tofu serve --help`` cut at its group headings (``listening:`` on a line alone)."""
    names = "|".join(GROUPS)
    parts = re.split(rf"^({names}):$", help_text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_every_setting_has_a_known_group_and_unit() -> None:
    assert not [s.name for s in SETTINGS if s.group not in GROUPS]
    assert not [s.name for s in SETTINGS if s.unit not in UNITS]
    assert all(any(s.group == group for s in SETTINGS) for group in GROUPS)


def test_docs_settings_md_is_current() -> None:
    assert SETTINGS_DOC.read_text() == settings_markdown(), (
        "docs/settings.md is stale: run `make docs` and commit it"
    )


@pytest.mark.parametrize("command", ["serve", "config"])
def test_help_groups_every_setting_under_its_group(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sections = group_sections(command_output([command, "--help"], capsys))
    assert list(sections) == list(GROUPS)
    misplaced = [
        s.flag for s in SETTINGS if not re.search(rf"^\s+{s.flag}\b", sections[s.group], re.M)
    ]
    assert not misplaced


def test_help_shows_no_raw_reprs_nor_byte_counts(capsys: pytest.CaptureFixture[str]) -> None:
    text = command_output(["serve", "--help"], capsys)
    assert "<ImageFormat" not in text and "(<" not in text
    for setting in SETTINGS:
        if setting.unit == "bytes":
            raw = str(getattr(Config, setting.name))
            assert raw not in text, f"{setting.flag} shows its default as {raw} bytes"
    assert "default 256MB" in flat(text)
    assert "default avif, webp" in flat(text)
    assert "one of: debug, info, warning, error" in flat(text)


@pytest.mark.parametrize("size", [1, 1000, 1 << 10, 64 << 10, 256 << 20, 1 << 30, 3 << 30])
def test_format_bytes_reads_back(size: int) -> None:
    assert parse_bytes(format_bytes(size)) == size


def test_every_choice_is_accepted_by_its_setting() -> None:
    for setting in SETTINGS:
        for choice in setting.choices:
            setting.parse(choice)


def machine_value(setting: Setting, shown: str) -> object:
    """The human default (``256MB``, ``30 s``, ``10%``, ``50,000,000 pixels (50 MP)``, ``avif,
    webp``) parsed by the setting's own parser, as ``tofu config`` prints values."""
    if setting.multiple:
        return [getattr(setting.parse(item), "value", item) for item in shown.split(", ")]
    if setting.unit == "bytes":
        return setting.parse(shown)
    return setting.parse(shown.split(" ")[0].replace(",", ""))


def test_docs_help_and_config_agree(capsys: pytest.CaptureFixture[str]) -> None:
    """Each default reads the same in docs/settings.md and in --help, and parsed back it is
    what ``tofu config`` prints for a configuration that sets nothing else."""
    help_text = flat(command_output(["serve", "--help"], capsys))
    described = json.loads(command_output(["config", "--origin", str(SAMPLES), "--dev"], capsys))
    rows = {
        line.split("|")[1].strip().split(" ")[0].strip("`"): line
        for line in SETTINGS_DOC.read_text().splitlines()
        if line.startswith("| `--")
    }
    assert set(rows) == {s.flag for s in SETTINGS}
    for setting in SETTINGS:
        row = rows[setting.flag]
        assert f"`{setting.env}`" in row
        if not setting.default:
            assert f"[env {setting.env}]" in help_text
            continue
        assert f"| {setting.default} |" in row
        assert f"env {setting.env}; default {setting.default}" in help_text
        if setting.default_text:  # computed from the machine's cores
            assert described[setting.name] == getattr(Config(), setting.name)
        elif setting.name == "hedge_after":
            assert described[setting.name] is None  # auto
        else:
            assert machine_value(setting, setting.default) == described[setting.name], setting.flag
