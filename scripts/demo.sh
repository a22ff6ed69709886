#!/usr/bin/env bash
# Set up, then segment a real photo with 4 local gRPC workers (MobileSAM, tinyvit-isolated plan, semantic
# scheme: windows with a detected face are computed on the edge and never sent).
# Writes out/mask.png, out/overlay.png, out/views.png (what each worker saw), out/result.json, out/ledger.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
PHOTO="$(.venv/bin/python -c 'import os, skimage.data as d; print(os.path.join(os.path.dirname(d.__file__), "astronaut.png"))')"
mkdir -p out
# one ledger per demo run; an earlier run's is kept beside it, not appended to
[ -f out/ledger.jsonl ] && mv out/ledger.jsonl "out/ledger.$(date +%Y%m%d-%H%M%S).jsonl"
.venv/bin/pedvit segment "$PHOTO" --local 4 --scheme semantic --point 250,120 \
  --out out/mask.png --overlay out/overlay.png --views out/views.png --json out/result.json --ledger out/ledger.jsonl "$@"
.venv/bin/pedvit ledger check out/ledger.jsonl
