"""The benchmark's pictures: fidelity against bits (log scale) with the Pareto frontier, one
panel per target; and per-site test R² bars."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

MARKERS = {"reference": ("*", "black", 220), "mean": ("o", "tab:gray", 60), "memorisation": ("s", "tab:red", 60),
           "probe": ("^", "tab:blue", 60), "sae": ("D", "tab:green", 50), "random": ("v", "tab:orange", 60)}


FLOOR = -0.1  # coverage below this (worse than the mean) is drawn at the floor


def _targets(rows) -> list[str]:
    return list(dict.fromkeys(r.target for r in rows))


def _save_with_legend(fig, ax, path: Path, bottom: float) -> None:
    """One legend of the families under the panels, then the file."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(MARKERS), frameon=False)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_plot(rows: Sequence, path: Path) -> None:
    from .coverage import pareto_front

    targets = _targets(rows)
    if not targets:
        return
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 4.2), squeeze=False)
    for ax, target in zip(axes[0], targets):
        pool = [r for r in rows if r.target == target]
        for family, (marker, color, size) in MARKERS.items():
            members = [r for r in pool if r.family == family]
            if members:
                ax.scatter([max(r.bits, 1) for r in members], [max(r.coverage, FLOOR) for r in members],
                           marker=marker, color=color, s=size, label=family, zorder=3, edgecolors="white",
                           linewidths=0.5)
        for reference in dict.fromkeys(r.reference for r in pool):  # a frontier per set of sites
            group = [r for r in pool if r.reference == reference]
            front = sorted((group[k] for k in pareto_front([(r.bits, r.coverage) for r in group])),
                           key=lambda r: r.bits)
            ax.step([max(r.bits, 1) for r in front], [max(r.coverage, FLOOR) for r in front], where="post",
                    color="black", alpha=0.4, lw=1, zorder=2)
        for r in pool:
            if r.family == "reference":
                ax.annotate(r.theory, (max(r.bits, 1), max(r.coverage, FLOOR)), textcoords="offset points",
                            xytext=(-6, 6), ha="right", fontsize=7)
        ax.set_xscale("log")
        ax.set_ylim(FLOOR - 0.05, 1.05)
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("size (bits)")
        ax.set_ylabel(f"coverage (test R², shown from {FLOOR})")
        ax.grid(alpha=0.3)
    _save_with_legend(fig, axes[0][0], path, 0.06)


def site_bars(rows: Sequence, path: Path) -> None:
    targets = _targets(rows)
    if not targets:
        return
    fig, axes = plt.subplots(len(targets), 1, figsize=(9, 2.8 * len(targets)), squeeze=False)
    for ax, target in zip(axes[:, 0], targets):
        pool = [r for r in rows if r.target == target]
        sites = list(dict.fromkeys(s for r in pool for s in r.r2))
        width = 0.8 / max(len(pool), 1)
        for k, r in enumerate(pool):
            xs = [j + k * width for j, s in enumerate(sites) if s in r.r2]
            ax.bar(xs, [max(r.r2[s], -0.1) for s in sites if s in r.r2], width, label=r.theory,
                   color=MARKERS.get(r.family, ("", "tab:purple", 0))[1], alpha=0.55 + 0.45 * (r.family == "reference"),
                   edgecolor="black" if r.family == "reference" else "none")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sites))], sites)
        ax.set_ylabel("test R²")
        ax.set_title(target, fontsize=10)
        ax.set_ylim(-0.1, 1.05)
        ax.legend(fontsize=6, ncol=3, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _scatter(ax, pool, y_of, floor=None) -> None:
    for family, (marker, color, size) in MARKERS.items():
        members = [r for r in pool if r.family == family and y_of(r) is not None]
        if members:
            ys = [y_of(r) if floor is None else max(y_of(r), floor) for r in members]
            ax.scatter([max(r.coverage, FLOOR) for r in members], ys, marker=marker, color=color, s=size,
                       label=family, zorder=3, edgecolors="white", linewidths=0.5)


def counterfactual_plot(rows: Sequence, path: Path) -> None:
    """Per target, each theory's test coverage against what explains more than coverage: its
    counterfactual fidelity (R² under the standard interventions; where no intervention moves
    another site, the KL of outputs, lower is better) and its coverage on a shifted distribution."""
    targets = [t for t in _targets(rows) if any(r.counterfactual for r in rows if r.target == t)]
    if not targets:
        return
    fig, axes = plt.subplots(2, len(targets), figsize=(4.4 * len(targets), 7.2), squeeze=False)
    for k, target in enumerate(targets):
        pool = [r for r in rows if r.target == target]
        by_r2 = any(r.counterfactual.get("r2") is not None for r in pool if r.counterfactual)
        key = "r2" if by_r2 else "kl"
        top, bottom = axes[0][k], axes[1][k]
        _scatter(top, pool, lambda r: (r.counterfactual or {}).get(key), FLOOR if by_r2 else None)
        top.set_ylabel(f"counterfactual R² (shown from {FLOOR})" if by_r2 else "counterfactual KL of outputs (log)")
        if by_r2:
            top.set_ylim(FLOOR - 0.05, 1.05)
        else:
            top.set_yscale("symlog", linthresh=1e-3)
        _scatter(bottom, pool, lambda r: r.coverage_shifted, FLOOR)
        bottom.set_ylabel(f"coverage on a shifted distribution (from {FLOOR})")
        bottom.set_ylim(FLOOR - 0.05, 1.05)
        top.set_title(target, fontsize=10)
        for ax in (top, bottom):
            ax.set_xlim(FLOOR - 0.05, 1.05)
            ax.set_xlabel("coverage (test)")
            ax.grid(alpha=0.3)
    _save_with_legend(fig, axes[0][0], path, 0.05)
