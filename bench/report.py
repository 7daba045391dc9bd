"""bench/results.json as Markdown (for bench/RESULTS.md): `python -m bench.report [PATH]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import BENCH_DIR, _fmt


def markdown(report: dict[str, Any]) -> str:
    """The machine, the notes and the table of one run."""
    m = report["machine"]
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gb']} GB RAM, Python {m['python']};"
        f" load average at start {m['loadavg_at_start']}; whole run {report['elapsed_s']} s.",
        "",
        *(f"- {note}" for note in report["notes"]),
        "",
        "| bench | measure | project | baseline | ratio | target | |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        met = {True: "ok", False: "**miss**", None: ""}[r["met"]]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(
            f"| {r['bench']} | {r['measure']} | {_fmt(r['value'], r['unit'])} "
            f"| {_fmt(r['baseline'], r['unit'])} | {ratio} | {r['target'] or ''} "
            f"| {' '.join(x for x in (met, r['note']) if x)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR / "results.json"
    print(markdown(json.loads(path.read_text())), end="")
