"""Throughput by approach, from a run of benchmarks.bench_peers, as a PNG.

    python -m benchmarks.plot_results benchmarks/results/peers-300M.json [--out PLOT.png]

Horizontal bars of Mbit/s of capture per approach on a log scale, the Hyperscan limit of the
same run as a vertical line, each bar labelled with its rate and its ratio to the limit;
extrapolated rates (scapy, pyshark on a slice) are hatched; for egresswatch a diamond marks
the rate of its replay loop alone (its own summary line, without start-up and rule compile). Approaches that did not run
(skipped, pending, timeout, error) are listed under the chart with the reason.
Needs matplotlib (benchmarks/requirements.txt); renders headless (Agg).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def plot(record: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in record["rows"] if r["status"] == "ok"]
    absent = [r for r in record["rows"] if r["status"] != "ok"]
    rows.sort(key=lambda r: r["mbit_s"])
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 2.2 + 0.25 * len(absent)))
    colors = ["#d9822b" if r["approach"].startswith("egresswatch") else
              "#4a6fa5" if r["approach"] == "hyperscan-limit" else "#8c8c8c" for r in rows]
    bars = ax.barh([r["approach"] for r in rows], [r["mbit_s"] for r in rows], color=colors)
    for bar, row in zip(bars, rows):
        if row["note"].startswith("extrapolated"):
            bar.set_hatch("//")
            bar.set_edgecolor("white")
        ratio = f"  {row['mbit_s']:,.1f} Mbit/s" + (f" ({row['x_limit']:.2f}× limit)" if "x_limit" in row else "")
        if row["note"].startswith("extrapolated"):
            ratio += ", extrapolated"
        if "own_mbit_s" in row:
            ax.plot([row["own_mbit_s"]], [bar.get_y() + bar.get_height() / 2], marker="D", color="black",
                    markersize=5, linestyle="none")
            ratio += f"; ◆ replay loop alone {row['own_mbit_s']:,.0f} Mbit/s" + (
                f" ({row['own_x_limit']:.2f}×)" if "own_x_limit" in row else "")
        ax.text(max(row["mbit_s"], row.get("own_mbit_s", 0) * 1.15), bar.get_y() + bar.get_height() / 2, ratio,
                va="center", fontsize=8)
    ax.set_xscale("log")
    limit = record.get("limit_mbit_s")
    if limit:
        ax.axvline(limit, color="#4a6fa5", linestyle="--", linewidth=1)
        ax.text(limit, -0.6, " Hyperscan limit", color="#4a6fa5", fontsize=8, va="top")
    right = max([max(r["mbit_s"], r.get("own_mbit_s", 0)) for r in rows] + [limit or 0])
    ax.set_xlim(left=min(r["mbit_s"] for r in rows) / 2, right=right * 30)
    ax.set_ylim(-1.2, len(rows) - 0.4)
    ax.set_xlabel("Mbit/s of capture, one core each (egresswatch-2w: two), log scale")
    machine = record.get("machine", {})
    ax.set_title(f"{record['capture']}: {record['capture_bytes'] / 1e6:,.0f} MB, {record['capture_packets']:,} packets "
                 f"({machine.get('cpu_model', '')}, Python {machine.get('python', '')})", fontsize=9)
    if absent:
        text = "\n".join(f"{r['approach']}: {r['status']} ({r.get('reason', '')})" for r in absent)
        fig.text(0.01, 0.01, text, fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.04 * bool(absent) + 0.02 * len(absent), 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", help="JSON written by benchmarks.bench_peers")
    parser.add_argument("--out", help="PNG to write (default: the record's name with .png)")
    args = parser.parse_args(argv)
    try:
        record = json.loads(Path(args.record).read_text(encoding="utf-8"))
        if not any(r.get("status") == "ok" for r in record["rows"]):
            raise ValueError("no approach ran in this record")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        print(f"plot_results: error: {args.record}: not a usable bench_peers record: {exc}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot_results: error: matplotlib is not installed (pip install -r benchmarks/requirements.txt)",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.record).with_suffix(".png")
    plot(record, out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
