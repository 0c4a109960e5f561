#!/usr/bin/env bash
# Rebuild one shipped model bundle under models/ with the lab tools (one command per model):
#   scripts/build_models.sh sdnet-learngene-umi50      # learngene pipeline, medium scale (~1 h, 2 cores)
#   scripts/build_models.sh hypernet-deepsic-sed-n12   # DeepSIC training on the synthetic channel (~8 min)
#   scripts/build_models.sh hypernet-deepsic-tv-n12    # DeepSIC training on the time-varying channel (~8 min)
#   scripts/build_models.sh hypernet-deepsic-complex-kron12x8  # complex-baseband DeepSIC hypernetwork, Kronecker (~4 min)
#   scripts/build_models.sh hypermimo-ls12x6-drop0     # HyperMIMO, local scattering drop 0, LS CSI, LMMSE start (~10 min)
#   scripts/build_models.sh hypermimo-ls12x6-drop5     # the same for drop 5: adapt-demo's offline reference (~10 min)
#   scripts/build_models.sh wesnet-hf-30x60            # R-WeSNet-HF 30x60 BPSK (the cpu config trains six variants, ~40 min)
#   scripts/build_models.sh sdnet-static-site-umi50    # SDNet for a static site: learngene pipeline on static UMi sites (~20 min)
# Training is seeded; a rebuilt bundle has the same architecture and system config, and weights
# equal up to floating-point non-determinism of multi-threaded CPU kernels.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
copy() {  # a rebuilt detector bundle gets its operating envelope measured again (docs/operating-envelopes.md)
  rm -rf "models/$2"; cp -r "$1" "models/$2"
  if grep -q "\[$2\]=" scripts/measure_envelopes.sh; then scripts/measure_envelopes.sh "$2"; fi
  .venv/rx/bin/neuralmimo bundle inspect "models/$2"
}
case "${1:-}" in
  sdnet-learngene-umi50)
    .venv/lab/bin/neuralmimo learngene run --config configs/learngene/medium.yaml --out out/learngene/medium
    copy out/learngene/medium/individual/task_050/inherit-bottom/bundle sdnet-learngene-umi50
    copy out/learngene/medium/extract/learngene learngene-umi-bottom ;;
  hypernet-deepsic-sed-n12)
    .venv/rx/bin/neuralmimo deepsic train --config configs/deepsic/sed_n12.yaml --out out/deepsic/sed_n12
    copy out/deepsic/sed_n12/train/hypernetwork hypernet-deepsic-sed-n12 ;;
  hypernet-deepsic-tv-n12)
    .venv/rx/bin/neuralmimo deepsic train --config configs/deepsic/tv_n12.yaml --out out/deepsic/tv_n12
    copy out/deepsic/tv_n12/train/hypernetwork hypernet-deepsic-tv-n12 ;;
  hypernet-deepsic-complex-kron12x8)
    .venv/rx/bin/neuralmimo deepsic train --config configs/deepsic/complex_kronecker.yaml --out out/deepsic-complex/kronecker
    copy out/deepsic-complex/kronecker/train/hypernetwork hypernet-deepsic-complex-kron12x8 ;;
  hypermimo-ls12x6-drop0)
    .venv/rx/bin/neuralmimo hypermimo train --config configs/hypermimo/ship_drop0.yaml --out out/hypermimo/ship_drop0
    copy out/hypermimo/ship_drop0/train/drop0-ls hypermimo-ls12x6-drop0 ;;
  hypermimo-ls12x6-drop5)
    .venv/rx/bin/neuralmimo hypermimo train --config configs/hypermimo/ship_drop5.yaml --out out/hypermimo/ship_drop5
    copy out/hypermimo/ship_drop5/train/drop5-ls hypermimo-ls12x6-drop5 ;;
  wesnet-hf-30x60)
    .venv/rx/bin/neuralmimo wesnet train --config configs/wesnet/cpu.yaml --out out/wesnet/cpu
    copy out/wesnet/cpu/train/r-wesnet-hf wesnet-hf-30x60 ;;
  sdnet-static-site-umi50)
    .venv/lab/bin/neuralmimo umi generate --tasks 0:10 --ues 2000 --drop-per-ue
    .venv/lab/bin/neuralmimo umi generate --tasks 50 --ues 2000 --drop-per-ue
    .venv/lab/bin/neuralmimo learngene run --config configs/learngene/static-site.yaml --out out/learngene/static-site
    selected=$(.venv/lab/bin/python -c "import json; print(json.load(open('out/learngene/static-site/extract/metrics.json'))['selected'])")
    copy "out/learngene/static-site/individual/task_050/inherit-$selected/bundle" sdnet-static-site-umi50 ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
