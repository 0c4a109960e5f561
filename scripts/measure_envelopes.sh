#!/usr/bin/env bash
# Measure the operating envelope of every shipped detector bundle (neuralmimo bundle envelope): the
# sweep against MMSE on each bundle's recorded system is written into its manifest (weights
# untouched), the tables and plots into docs/envelopes/, and the summary table of
# docs/operating-envelopes.md is regenerated (scripts/envelope_summary.py). One model: scripts/measure_envelopes.sh NAME
# (about 25 min for all on 2 cores; the DeepSIC hypernetworks sweep every user count 1..K_max).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
scripts/bootstrap.sh
NM=.venv/rx/bin/neuralmimo
mkdir -p docs/envelopes
sweep() {  # NAME [extra options]
  local name=$1; shift
  "$NM" bundle envelope "models/$name" --no-progress --plot "docs/envelopes/$name.png" \
    --report "docs/envelopes/$name.md" "$@" > /dev/null
  echo "$name: $(.venv/rx/bin/python -c "from neuralmimo.detectors import load_detector; print(load_detector('models/$name').envelope.describe())")"
}
declare -A OPTS=(
  [hypermimo-ls12x6-drop0]="--symbols 600000 --snr -5:1:30"
  [hypermimo-ls12x6-drop5]="--symbols 600000 --snr -5:1:30"
  [hypernet-deepsic-complex-kron12x8]="--symbols 200000"
  [hypernet-deepsic-sed-n12]="--symbols 200000"
  [hypernet-deepsic-tv-n12]="--symbols 100000"
  [sdnet-learngene-umi50]="--symbols 400000"
  [sdnet-static-site-umi50]="--symbols 400000"
  [wesnet-hf-30x60]="--symbols 600000"
)
if [ $# -gt 0 ]; then names=("$@"); else names=("${!OPTS[@]}"); fi
for name in "${names[@]}"; do
  [ -n "${OPTS[$name]+x}" ] || { echo "unknown model $name; choose from ${!OPTS[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086
  sweep "$name" ${OPTS[$name]}
done
.venv/rx/bin/python scripts/envelope_summary.py
