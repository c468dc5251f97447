"""Draw docs/sizing.png from `bench/screen.py` runs: wall seconds by input rows, log-log.

    python bench/plot_sizing.py RUN_DIR [RUN_DIR ...] -o docs/sizing.png

Each RUN_DIR is a `bench/screen.py --workdir`, whose `results.json` holds that run's contenders; one
point per contender per run, so the plot shows how each grows with the input beside its floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: Contenders drawn, with their legend labels (the others in a run are left out).
SERIES: dict[str, str] = {
    "screen": "leukowatch screen, DuckDB",
    "copy": "DuckDB copy of every row (floor)",
    "duckdb_plain": "plain DuckDB job",
    "spark": "leukowatch screen, Spark local[2]",
    "spark_plain": "plain PySpark job",
    "spark_plain_all": "plain PySpark job grading every result",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("docs/sizing.png"))
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, list[tuple[int, float]]] = {name: [] for name in SERIES}
    for run in args.runs:
        data = json.loads((run / "results.json").read_text())
        for name, r in data["results"].items():
            if name in points:
                points[name].append((int(r["rows"]), float(r["seconds"])))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in points.items():
        if pts:
            rows, secs = zip(*sorted(pts), strict=True)
            ax.plot(rows, secs, marker="o", label=SERIES[name], linestyle="--" if "plain" in name or name == "copy"
                    else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input rows")
    ax.set_ylabel("wall seconds")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("bench/screen.py: cost by input size (log-log)")
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
