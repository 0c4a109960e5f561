"""The summary table of the shipped models' operating envelopes (Markdown), from the envelope
sections in models/*/manifest.json (scripts/measure_envelopes.sh writes them), written between
the markers of docs/operating-envelopes.md (or printed with --print)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "operating-envelopes.md"
BEGIN, END = "<!-- envelope-summary: scripts/envelope_summary.py -->", "<!-- /envelope-summary -->"


def _ranges(users: list[dict], key) -> str:
    """``K=1..3: a; K=4: b`` -- user counts with the same value grouped into runs."""
    parts, run = [], []
    for u in users + [None]:
        if run and (u is None or key(u) != key(run[-1]) or u["n_users"] != run[-1]["n_users"] + 1):
            ks = f"{run[0]['n_users']}" if len(run) == 1 else f"{run[0]['n_users']}..{run[-1]['n_users']}"
            parts.append(f"K={ks}: {key(run[0])}")
            run = []
        if u is not None:
            run.append(u)
    return "; ".join(parts)


def table() -> str:
    lines = []
    print = lines.append  # noqa: A001 - the rows below read as the table they print
    print("| model | SNR convention, CSI | trained at [dB] | envelope [dB] (fallback off: not worse than MMSE) | "
          "worse than MMSE without fallback at [dB] | with fallback: points worse than MMSE |")
    print("|---|---|---|---|---|---|")
    for path in sorted((ROOT / "models").glob("*/manifest.json")):
        m = json.loads(path.read_text())
        env = m.get("envelope")
        if env is None:
            continue
        users = env["users"]
        envelope = _ranges(users, lambda u: ", ".join(f"{a:g} to {b:g}" for a, b in u["snr_db"]) or "none")
        worse = _ranges(users, lambda u: ", ".join(f"{p['snr_db']:g}" for p in u["sweep"]
                                                  if p["worse"] and not p.get("undecided")) or "nowhere")
        val = [p for u in users for p in u["sweep"] if "validation" in p]
        bad = [f"K={u['n_users']} {p['snr_db']:g}" for u in users for p in u["sweep"]
               if p.get("validation", {}).get("worse")]
        checked = f"{len(bad)} of {len(val)}" + (f" ({', '.join(bad)} dB)" if bad else "") if val else "not checked"
        trained = m["system"]["snr_db"]
        print(f"| [{path.parent.name}](envelopes/{path.parent.name}.md) | {env['snr_convention']}, {env['csi']} | "
              f"{' to '.join(f'{v:g}' for v in trained) if trained else '?'} | {envelope} | {worse} | {checked} |")
    return "\n".join(lines)


def main() -> None:
    text = table()
    if "--print" in sys.argv:
        sys.stdout.write(text + "\n")
        return
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"{DOC.relative_to(ROOT)}: summary table written")


if __name__ == "__main__":
    main()
