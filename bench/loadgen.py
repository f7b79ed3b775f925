"""Closed-loop HTTP load for the serving benchmark: ``wrk`` when installed, else httpx.

``run`` keeps ``concurrency`` connections busy with POSTs rotating over a list of JSON
bodies, first for ``warmup`` seconds (discarded), then for ``duration`` seconds, and returns
``{requests, ok, non_2xx, socket_errors, duration_s, rps, p50_ms, p90_ms, p99_ms, mean_ms}``
where ``rps`` counts 2xx answers only.

``wrk`` runs a generated Lua script whose ``done`` hook prints the exact percentiles as one
JSON line. The fallback runs this file as separate processes (``python loadgen.py SPEC``), one
per four cores, so that the clients share no GIL with each other or the benchmark driver.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WRK_LUA = """
local bodies = {%(bodies)s}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(headers)s
local reqs, n = {}, 0
function init(args)
  for i, b in ipairs(bodies) do reqs[i] = wrk.format("POST", "%(path)s", nil, b) end
end
function request()
  n = n %% #reqs + 1
  return reqs[n]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d,'
    .. ' "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "mean_us": %%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


def run(
    url: str,
    headers: dict[str, str],
    bodies: list[dict],
    concurrency: int,
    warmup: float,
    duration: float,
    wrk: str = "",
    wrk_threads: int = 1,
) -> dict[str, Any]:
    """Warm up, then measure; ``wrk`` is the binary's path, empty for the httpx client."""
    if not wrk:
        return _run_httpx_processes(url, headers, bodies, concurrency, warmup, duration)
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_lua(url, headers, bodies))
        cmd = [wrk, f"-t{max(1, min(wrk_threads, concurrency))}", f"-c{concurrency}"]
        cmd += ["--timeout", "30s", "--latency", "-s", str(script)]
        _wrk(cmd, warmup, url)
        return _wrk(cmd, duration, url)


def _lua(url: str, headers: dict[str, str], bodies: list[dict]) -> str:
    return WRK_LUA % {
        # Long brackets need no escaping: JSON of plain sentences never holds "]==]".
        "bodies": ",\n".join(f"[==[{json.dumps(b)}]==]" for b in bodies),
        "headers": "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()),
        "path": urlsplit(url).path,
    }


def _wrk(cmd: list[str], seconds: float, url: str) -> dict[str, Any]:
    full = [*cmd, f"-d{max(1, round(seconds))}s", url]
    proc = subprocess.run(full, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout[-800:]}{proc.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    # wrk counts status >= 400 as errors, so a 3xx would pass as ok; none is expected here.
    ok = raw["requests"] - raw["status_errors"]
    duration = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "ok": ok,
        "non_2xx": raw["status_errors"],
        "socket_errors": raw["socket_errors"],
        "duration_s": duration,
        "rps": ok / duration,
        **{f"p{p}_ms": raw[f"p{p}_us"] / 1e3 for p in (50, 90, 99)},
        "mean_ms": raw["mean_us"] / 1e3,
    }


def _run_httpx_processes(url, headers, bodies, concurrency, warmup, duration) -> dict:
    """Split the connections over a few client processes: one httpx process tops out at a
    few hundred requests/s, below what a GPU server answers."""
    procs = max(1, min(concurrency, (os.cpu_count() or 1) // 4))
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        children = []
        for i in range(procs):
            spec = {"url": url, "headers": headers, "bodies": bodies[i:] + bodies[:i]}
            spec.update(concurrency=concurrency // procs + (i < concurrency % procs))
            spec.update(warmup=warmup, duration=duration, out=f"{tmp}/{i}.json")
            Path(f"{tmp}/{i}.spec").write_text(json.dumps(spec))
            cmd = [sys.executable, __file__, f"{tmp}/{i}.spec"]
            children.append(subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
        try:
            for child in children:
                _, err = child.communicate(timeout=warmup + duration + 120)
                if child.returncode != 0:
                    raise RuntimeError(f"httpx load generator failed: {err[-2000:]}")
        finally:
            for child in children:
                child.kill()
        parts = [json.loads(Path(f"{tmp}/{i}.json").read_text()) for i in range(procs)]
    return _merge(parts)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    lat = sorted(x for p in parts for x in p["latencies_s"]) or [float("nan")]
    counts = {k: sum(p[k] for p in parts) for k in ("ok", "non_2xx", "socket_errors")}
    elapsed = max(p["elapsed_s"] for p in parts)
    return {
        "requests": counts["ok"] + counts["non_2xx"],
        **counts,
        "duration_s": elapsed,
        "rps": counts["ok"] / elapsed,
        **{f"p{p}_ms": lat[min(len(lat) - 1, len(lat) * p // 100)] * 1e3 for p in (50, 90, 99)},
        "mean_ms": sum(lat) / len(lat) * 1e3,
    }


async def _httpx_load(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    bodies = [json.dumps(b).encode() for b in spec["bodies"]]
    conc = spec["concurrency"]
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    headers = {"Content-Type": "application/json", **spec["headers"]}
    stats: dict[str, Any] = {"latencies_s": [], "ok": 0, "non_2xx": 0, "socket_errors": 0}

    async def worker(client: httpx.AsyncClient, i: int, until: float, record: bool) -> None:
        while time.perf_counter() < until:
            i += 1
            start = time.perf_counter()
            try:
                resp = await client.post(spec["url"], content=bodies[i % len(bodies)])
            except httpx.HTTPError:
                stats["socket_errors"] += record
                continue
            if record:
                stats["latencies_s"].append(time.perf_counter() - start)
                stats["ok" if 200 <= resp.status_code < 300 else "non_2xx"] += 1

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:
        for seconds, record in ((spec["warmup"], False), (spec["duration"], True)):
            start = time.perf_counter()
            await asyncio.gather(
                *(worker(client, 7 * i, start + seconds, record) for i in range(conc))
            )
            stats["elapsed_s"] = time.perf_counter() - start
    return stats


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    Path(spec["out"]).write_text(json.dumps(asyncio.run(_httpx_load(spec))))
