"""Complete an unpacked carry bundle on the GPU machine: copy a ``pool/`` package into
``site/`` only where the image's own version misses what the bundle needs (``needs.json``).

    python3 tools/gpu/fill_site.py /tmp/raybundle     # run with PYTHONPATH unset

Prints one line per decision and the image's versions of the packages that matter, and
exits 1 when a requirement is missing that neither the image nor the bundle covers.
Standard library only: it runs before the bundle is on the path.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from importlib import metadata
from pathlib import Path


def _key(v: str) -> tuple:
    """A version as a comparable tuple: release numbers, then pre-release marker (a<b<rc<final)."""
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)(?:[-_.]?(a|b|rc|alpha|beta|c)[-_.]?(\d*))?", v)
    if not m:
        return ((0,), 3, 0)
    rel = tuple(int(x) for x in m.group(1).split("."))
    while len(rel) > 1 and rel[-1] == 0:
        rel = rel[:-1]
    pre = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2}.get(m.group(2) or "", 3)
    return (rel, pre, int(m.group(3) or 0))


def satisfies(version: str, spec: str) -> bool:
    """``version`` against a PEP 440 specifier set such as ``<5,>=4.0.0`` (no wildcards)."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        m = re.match(r"(~=|==|!=|<=|>=|<|>)\s*(.+)", clause)
        if not m:
            continue
        op, want = m.groups()
        if want.endswith(".*"):  # prefix match, rare here: compare the release prefix
            n = want[:-2].count(".") + 1
            same = _key(version)[0][:n] == _key(want[:-2])[0][:n]
            if (op == "==") != same:
                return False
            continue
        a, b = _key(version), _key(want)
        ok = {
            "==": a == b,
            "!=": a != b,
            "<=": a <= b,
            ">=": a >= b,
            "<": a < b,
            ">": a > b,
            "~=": a >= b and a[0][: max(1, len(b[0]) - 1)] == b[0][: max(1, len(b[0]) - 1)],
        }[op]
        if not ok:
            return False
    return True


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main(bundle: Path) -> int:
    needs = json.loads((bundle / "needs.json").read_text())
    roots: dict[str, list[str]] = needs["roots"]
    pool: dict[str, dict] = needs["pool"]
    omitted = set(needs.get("omitted", []))
    wanted: dict[str, list[str]] = {k: list(v) for k, v in roots.items()}
    taken: set[str] = set()
    changed = True
    while changed:  # a package taken from the pool brings its own requirements
        changed = False
        for name, specs in sorted(wanted.items()):
            if name in taken or name not in pool:
                continue
            have = installed(name)
            if have is None or not all(satisfies(have, s) for s in specs):
                taken.add(name)
                changed = True
                for dep, dspecs in pool[name]["requires"].items():
                    wanted.setdefault(dep, []).extend(dspecs)
    site = bundle / "site"
    for name in sorted(taken):
        for item in (bundle / "pool" / name).iterdir():
            dest = site / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dest)
    bad = []
    for name, specs in sorted(wanted.items()):
        have = installed(name)
        spec = ",".join(s for s in specs if s) or "any"
        if name in taken:
            what = f"bundled {pool[name]['version']} (image: {have or 'none'})"
        elif name in omitted:
            what = f"image {have or 'none'}, left out on purpose (lazy import)"
        elif have is None or not all(satisfies(have, s) for s in specs):
            what = f"image {have or 'none'}: NOT SATISFIED"
            bad.append(name)
        else:
            what = f"image {have}"
        print(f"  {name:<22} {spec:<40} {what}")
    for name in (
        "torch",
        "transformers",
        "sentence-transformers",
        "tokenizers",
        "grpcio",
        "protobuf",
        "numpy",
        "aiohttp",
        "httpx",
        "uvloop",
        "psutil",
    ):
        print(f"  image {name} {installed(name)}")
    if bad:
        print(f"fill_site: requirements not met: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/raybundle")))
