"""docs/configuration.md against ``Settings`` and ``modelyard up``, so the reference cannot
drift from the code: every setting documented once, with its option and its default."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from cluster.cli.server import up
from cluster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DOC = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\bMODELYARD_[A-Z0-9_]*[A-Z0-9]\b")


def env_name(field: str) -> str:
    return f"MODELYARD_{field.upper()}"


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def table_rows() -> dict[str, list[str]]:
    """The settings table: variable -> its cells (variable, option, default, meaning)."""
    rows = {}
    for line in CONFIG_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `MODELYARD_") and len(cells) == 4:
            rows[cells[0].strip("`")] = cells
    return rows


def test_every_setting_is_documented() -> None:
    text = CONFIG_DOC.read_text()
    missing = [env_name(f) for f in Settings.model_fields if env_name(f) not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_documented_variable_is_a_setting() -> None:
    known = {env_name(f) for f in Settings.model_fields}
    named = set(VARIABLE.findall(CONFIG_DOC.read_text()))
    # Ray's own variables (RAY_SERVE_...) do not match the MODELYARD_ prefix.
    assert named - known == set(), "documented but not a Settings field"


def test_each_setting_has_one_table_row() -> None:
    rows = table_rows()
    assert sorted(rows) == sorted(env_name(f) for f in Settings.model_fields)


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_row_names_the_up_option(field: str) -> None:
    cell = table_rows()[env_name(field)][1]
    if field in inspect.signature(up).parameters:
        assert option_name(field) in cell.replace("`", " ").split()
    else:
        assert option_name(field) not in cell, f"modelyard up has no {option_name(field)}"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_row_gives_the_default(field: str) -> None:
    default = Settings.model_fields[field].default
    cell = table_rows()[env_name(field)][2]
    literal = re.match(r"`([^`]*)`", cell)
    if default is None:
        return  # described in words (e.g. "<storage root>/registry.db", "unset")
    if default == "":
        assert cell == "empty"
        return
    assert literal, f"{field}: give the default as a literal in backticks"
    shown = literal.group(1)
    if isinstance(default, bool):
        assert shown == str(default).lower()
    elif isinstance(default, (int, float)):
        assert float(shown) == float(default)
    else:
        assert shown == str(default)
