"""Draws a study's frontier as a PNG for the README, from the CSV files a search writes (frontier.html is the same
plot, interactive). Needs matplotlib: `pip install -e '.[docs]'`.

    python docs/frontier_picture.py results/<study> docs/pareto-frontier.png [--size params]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from nas.results.report import AXIS_TITLES, error  # noqa: E402

TICKS = [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2, 3, 5, 7, 10, 15, 20, 30, 50]  # error in %, where they fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study_dir", type=Path, help="results/<study>, holding trials.csv and frontier.csv")
    p.add_argument("out", type=Path)
    p.add_argument("--size", default="params", choices=AXIS_TITLES, help="the size column on the x axis")
    args = p.parse_args()
    trials = pd.read_csv(args.study_dir / "trials.csv")
    frontier = pd.read_csv(args.study_dir / "frontier.csv").sort_values(args.size)
    done = trials[(trials["state"] == "COMPLETE") & trials["reference"].isna()]

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    done_err, frontier_err = 100 * error(done["val_acc"]), 100 * error(frontier["val_acc"])
    ax.scatter(done[args.size], done_err, s=14, color="lightgrey", label="completed trials")
    ax.step(frontier[args.size], frontier_err, where="post", color="tab:blue", marker="o",
            label="Pareto set (validation)")
    for number, x, y in zip(frontier["number"], frontier[args.size], frontier_err):
        ax.annotate(f"#{int(number)}", (x, y), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_yscale("log")
    errors = pd.concat([done_err, frontier_err])
    ax.set_yticks([t for t in TICKS if errors.min() / 1.2 <= t <= errors.max() * 1.2], minor=False)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}%"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_yaxis()  # better is up, as in frontier.html
    ax.set_xlabel(AXIS_TITLES[args.size])
    ax.set_ylabel("validation error (%), log scale")
    ax.set_title(f"{args.study_dir.name}: {len(done)} completed trials, {len(frontier)} on the Pareto set")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
