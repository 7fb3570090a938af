"""Draws a results file of switchyard-bench (bench/results/<date>.json) as one PNG:
each panel shows Switchyard's figures as ratios to direct PostgreSQL, with the
target of issue 6 as a dashed line.

Usage: chart.py RESULTS.json OUT.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def bars(ax, labels, values, title, target=None, target_label=None, colors=None):
    xs = range(len(labels))
    shown = [v if v is not None else 0 for v in values]
    ax.bar(xs, shown, color=colors or "#4c72b0")
    for x, v in zip(xs, values):
        ax.text(x, (v or 0), "fail" if v is None else f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    if target is not None:
        ax.axhline(target, linestyle="--", color="#c44e52", linewidth=1, label=target_label)
        ax.legend(fontsize=7)


def main():
    results = json.load(open(sys.argv[1]))
    panels = [k for k in ("pgbench", "stream", "tpch") if k in results]
    rows = len(panels) + (1 if "tpch" in results else 0)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 4.2 * rows), squeeze=False)
    axes = [a[0] for a in axes]
    i = 0
    if "pgbench" in results:
        runs = results["pgbench"]["runs"]
        bars(
            axes[i],
            [f"{r['mode']}\n{r['clients']} client(s)" for r in runs],
            [r["tps_ratio"] for r in runs],
            "P1 pgbench select-only: Switchyard TPS / direct TPS (higher is better)",
            0.8,
            "target ≥ 0.8",
        )
        i += 1
    if "stream" in results:
        runs = results["stream"]["runs"]
        bars(
            axes[i],
            [f"{r['rows'] / 1e6:g} M rows\n{r['format'].replace('_', ' ')}\n{r['switchyard_peak_rss_mb']:.0f} MB peak" for r in runs],
            [r["ratio"] for r in runs],
            "P2 streaming: Switchyard time / direct time (lower is better; peak RSS under each bar)",
            1.25,
            "target ≤ 1.25",
        )
        i += 1
    if "tpch" in results:
        t = results["tpch"]
        qs = t["queries"]
        labels = [f"Q{q['query']}" for q in qs]

        def ratio(q, key):
            base, v = q["direct"]["ms"], q[key]["ms"]
            return None if base is None or v is None else v / base

        ax = axes[i]
        width = 0.27
        for k, (key, color) in enumerate(
            [("postgres_fdw", "#8172b2"), ("switchyard_pg", "#4c72b0"), ("switchyard_split", "#55a868")]
        ):
            xs = [x + (k - 1) * width for x in range(len(qs))]
            vals = [ratio(q, key) for q in qs]
            ax.bar(xs, [v if v is not None else 0 for v in vals], width, color=color, label=key)
            for x, v in zip(xs, vals):
                if v is None:
                    ax.text(x, 0, "×", ha="center", va="bottom", fontsize=7, color="#c44e52")
        ax.set_yscale("log")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_xticks(range(len(qs)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(
            f"P3 TPC-H SF {t['scale_factor']}: time / direct PostgreSQL per query (log scale; × = failed)",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        i += 1
        tot = t["totals_ms"]
        bars(
            axes[i],
            ["postgres_fdw", "Switchyard, all on PostgreSQL", "Switchyard, split PG/Mongo/local"],
            [tot[k] / tot["direct"] if tot["direct"] else None for k in ("postgres_fdw", "switchyard_pg", "switchyard_split")],
            f"P3 total over the {tot['queries_answered_everywhere']} queries every setting answered: time / direct (log scale)",
            1.3,
            "all-PostgreSQL target ≤ 1.3",
            colors=["#8172b2", "#4c72b0", "#55a868"],
        )
        # postgres_fdw's total can be 100× the others: a linear axis hides them.
        axes[i].set_yscale("log")
    m = results.get("machine", {})
    fig.suptitle(
        f"Switchyard {m.get('switchyard_commit', '')} vs PostgreSQL {m.get('postgres', '')} — "
        f"{m.get('cpu', '')}, {m.get('cores', '')} cores, {m.get('measured_at', '')}",
        fontsize=9,
    )
    # Room at the top for the figure's title.
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(sys.argv[2], dpi=110)
    print(f"chart written to {sys.argv[2]}")


if __name__ == "__main__":
    main()
