"""The docs against the code, so the reference cannot drift: docs/configuration.md against
``Settings`` and ``modelyard up`` (every setting documented once, with its option and its
default); every relative link in README.md and docs/*.md reaches a file (and heading) that
exists, and every file they name in backticks is in the tree; the example fine-tuning config
the README submits is valid."""

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


# --- links and the shipped example config -------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(doc: Path) -> list[str]:
    """Link targets in ``doc`` that are neither web addresses nor anchors on the same page.
    Code blocks are left out: what they hold is text, not links."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def anchors(doc: Path) -> set[str]:
    """GitHub's ids for the headings of ``doc``: lower case, punctuation dropped, spaces as -."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    heads = re.findall(r"^#+\s+(.*)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(doc: Path) -> None:
    broken = []
    for target in relative_links(doc):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve()
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_every_doc_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in relative_links(ROOT / "README.md")}
    assert set(DOCS[1:]) - linked == set()


def test_the_example_finetune_config_is_valid_and_its_dataset_loads(monkeypatch) -> None:
    """The config the README submits as a Ray Job: it parses as a ``FinetuneConfig`` and its
    dataset, relative to the repository root (the job's working directory), splits."""
    from train_jobs.config import FinetuneConfig
    from train_jobs.data import split_pairs

    config = FinetuneConfig.from_yaml(ROOT / "examples" / "finetune.yaml")
    monkeypatch.chdir(ROOT)
    train, held_out = split_pairs(
        config.dataset.load(), config.params.eval_fraction, config.params.seed
    )
    assert len(train) >= config.params.batch_size and len(held_out) >= 2
    assert config.params.max_steps and config.params.max_steps <= 10  # an example, not a run


def test_the_example_config_names_its_model_by_package_and_the_trainer_finds_it() -> None:
    """No copy step before the README's command: ``package://`` is resolved to the model
    directory the package ships, which the trainer accepts as a SentenceTransformer."""
    from train_jobs.config import FinetuneConfig
    from train_jobs.finetune import normalized

    config = FinetuneConfig.from_yaml(ROOT / "examples" / "finetune.yaml")
    assert config.base_model_path.startswith("package://")
    model_dir = Path(normalized(config).base_model_path)
    assert model_dir.is_absolute() and (model_dir / "modules.json").is_file()


TREE = ("cluster", "serve_apps", "train_jobs", "tests", "bench", "tools", "examples", "docs")
PATH_IN_CODE = re.compile(
    r"`((?:cluster|serve_apps|train_jobs|tests|bench|tools|examples)/[\w/.\-]*)`"
)
FILE_IN_CODE = re.compile(r"`(\w+\.(?:py|sh|yaml))`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_the_docs_name_exist(doc: Path) -> None:
    """A file named in backticks is in the tree: a moved or renamed module fails here until
    the docs follow (``cluster/ingress/door.py`` as a path, ``door.py`` somewhere in it)."""
    text = doc.read_text()
    missing = [p for p in PATH_IN_CODE.findall(text) if not (ROOT / p).exists()]
    names = {f.name for top in TREE for f in (ROOT / top).rglob("*")}
    names |= {f.name for f in ROOT.iterdir()}
    missing += [f for f in FILE_IN_CODE.findall(text) if f not in names]
    assert not missing, f"{doc.relative_to(ROOT)} names files that do not exist: {missing}"


def test_the_driver_script_is_shown_whole() -> None:
    """docs/client.md prints examples/driver.py as it is (the e2e suite runs the file)."""
    driver = (ROOT / "examples" / "driver.py").read_text().strip()
    assert driver in (ROOT / "docs" / "client.md").read_text()
