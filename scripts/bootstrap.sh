#!/usr/bin/env bash
# Idempotent set-up of everything gr-neuralmimo needs, used by `make demo` and `make test`.
#
#   1. Debian packages: GNU Radio 3.10 (gnuradio, gnuradio-dev), venv, CMake, a C++ compiler.
#   2. .venv/rx  : /usr/bin/python3 venv with --system-site-packages (GNU Radio's bindings),
#                  torch==2.13.0, numpy kept < 2, the project (editable) with test extras.
#   3. .venv/lab : /usr/bin/python3 venv with numpy 2, torch==2.13.0, sionna-no-rt==2.2.0,
#                  the project (editable). No GNU Radio.
#   4. build/    : the CMake part (gnuradio.neuralmimo, GRC YAML, examples, models, CTest)
#                  installed into .venv/rx.
#
# Every pip step is skipped when its inputs (this script, pyproject.toml, the constraints)
# are unchanged since the last successful run, so a second run takes seconds. Nothing is
# installed against a package's declared requirements: torch is installed first so that
# every later requirement on torch is already satisfied by the local CPU wheel.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
SYS_PY=/usr/bin/python3
TORCH="torch==2.13.0"
# xvfb, the GTK typelibs and xdotool: GNU Radio Companion on a virtual screen for the GRC QA test
APT_PACKAGES=(gnuradio gnuradio-dev python3-venv python3-pip cmake make g++ pkg-config xvfb gir1.2-gtk-3.0 xdotool)

log() { printf '[bootstrap] %s\n' "$*"; }

# --------------------------------------------------------------------------- 1. apt
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bootstrap: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO=sudo
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# --------------------------------------------------------------------------- 2./3. venvs
inputs_hash() {
  cat "$ROOT/scripts/bootstrap.sh" "$ROOT/pyproject.toml" "$ROOT/scripts/constraints-rx.txt" | sha256sum | cut -d' ' -f1
}
HASH=$(inputs_hash)
PIP_QUIET=(-q --disable-pip-version-check)

setup_venv() {  # name, venv flags, pip constraint args..., -- extras
  local name=$1 flags=$2 extras=$3; shift 3
  local dir="$VENV/$name" stamp="$VENV/$name/.neuralmimo-stamp"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$HASH" ] && [ -x "$dir/bin/python" ]; then
    return 0
  fi
  log "setting up the $name environment in $dir"
  [ -x "$dir/bin/python" ] || $SYS_PY -m venv $flags "$dir"
  "$dir/bin/python" -m pip install "${PIP_QUIET[@]}" "$@" "$TORCH"
  "$dir/bin/python" -m pip install "${PIP_QUIET[@]}" "$@" -e "$ROOT[$extras]"
  echo "$HASH" > "$stamp"
}

setup_venv rx "--system-site-packages" "test" -c "$ROOT/scripts/constraints-rx.txt"
setup_venv lab "" "lab,test"

# The rx environment must keep GNU Radio importable with numpy 1.x.
"$VENV/rx/bin/python" - <<'EOF'
import numpy, sys
from gnuradio import gr
if int(numpy.__version__.split(".")[0]) >= 2:
    sys.exit(f"rx environment has numpy {numpy.__version__}; GNU Radio's bindings need numpy < 2")
EOF

# --------------------------------------------------------------------------- 4. CMake part
RX_SITE=$("$VENV/rx/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
GR_PYTHON_DIR=${RX_SITE#"$VENV/rx/"}
# the core is installed editable by pip above (NEURALMIMO_INSTALL_CORE=OFF); configuring again
# with nothing changed takes a fraction of a second
[ -f "$ROOT/build/CMakeCache.txt" ] || log "configuring the CMake part"
mkdir -p "$ROOT/build"
cmake -S "$ROOT" -B "$ROOT/build" -DCMAKE_INSTALL_PREFIX="$VENV/rx" -DGR_PYTHON_DIR="$GR_PYTHON_DIR" \
      -DPYTHON_EXECUTABLE="$VENV/rx/bin/python" -DRX_PYTHON="$VENV/rx/bin/python" \
      -DLAB_PYTHON="$VENV/lab/bin/python" -DNEURALMIMO_INSTALL_CORE=OFF >"$ROOT/build/configure.log" 2>&1 \
  || { cat "$ROOT/build/configure.log" >&2; exit 1; }
{ cmake --build "$ROOT/build" && cmake --install "$ROOT/build"; } >"$ROOT/build/install.log" 2>&1 \
  || { cat "$ROOT/build/install.log" >&2; exit 1; }
"$VENV/rx/bin/python" -c "from gnuradio import neuralmimo" \
  || { echo "bootstrap: gnuradio.neuralmimo does not import in .venv/rx" >&2; exit 1; }
log "ready: rx=$VENV/rx lab=$VENV/lab"
