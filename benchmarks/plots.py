"""The benchmark's and the report's pictures: fidelity against bits (log scale) with the Pareto
frontier, one panel per target; counterfactual and shifted fidelity against coverage; per-site
test R² bars; a run's bits by part. Every figure keeps its legend and labels inside the saved
image, draws a value below FLOOR on a dotted line at FLOOR with the value written beside it, and
never lets a bar of zero height stand for a value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter  # noqa: E402

MARKERS = {"reference": ("*", "black", 220), "mean": ("o", "tab:gray", 60), "memorisation": ("s", "tab:red", 60),
           "probe": ("^", "tab:blue", 60), "sae": ("D", "tab:green", 50), "transcoder": ("X", "tab:purple", 60),
           "found": ("P", "tab:brown", 120), "random": ("v", "tab:orange", 60)}


FLOOR = -0.1  # coverage below this (worse than the mean) is drawn at the floor, its value written
BOTTOM = FLOOR - 0.16  # room under the floor line for the written values
FLAT = 0.012  # a bar lower than this (in R²) would vanish: it is drawn as a tick with its value
FROM_FLOOR = "shown from −0.1; lower: value written"
PER_ROW = 2  # panels side by side: wider rows shrink every tick label on a page or a README


def _targets(rows) -> list[str]:
    return list(dict.fromkeys(r.target for r in rows))


def _save(fig, path: Path) -> None:
    """Save with every label and legend inside the image (the bounding box grows to hold them)."""
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)


def _save_with_legend(fig, ax, path: Path) -> None:
    """One legend of the families under the panels, then the file."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncol=len(handles), frameon=False)
    _save(fig, path)


def _log_ticks(axis) -> None:
    """Log ticks whose labels do not run into each other on a narrow panel: at most about five
    decades labelled (every other one beyond), labels at 2 and 5 between decades where the axis
    spans less than about two, and every digit only where it spans less than one."""
    lo, hi = axis.get_view_interval()
    decades = math.log10(max(hi, 1e-300) / max(lo, 1e-300))
    axis.set_major_locator(LogLocator(base=10, numticks=6))
    if decades >= 1:
        axis.set_minor_locator(LogLocator(base=10, subs=(2, 5) if decades < 2.2 else np.arange(2, 10), numticks=12))
        axis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(10, 10))
                                 if decades < 2.2 else NullFormatter())
    axis.set_tick_params(which="both", labelsize=8)


def _floor_line(ax, horizontal: bool = True) -> None:
    (ax.axhline if horizontal else ax.axvline)(FLOOR, ls=":", color="0.45", lw=0.9, zorder=1)


def _value(v: float) -> str:
    return "≈0" if abs(v) < 0.005 else f"{v:.2f}".replace("-", "−")


def _below(x: float, y: float, values: Sequence[tuple[str, float | None]]) -> tuple | None:
    """The note for a point drawn at the floor: the true value of each clipped coordinate (the arrow
    says which way it lies); None when nothing is clipped."""
    text = " ".join(f"{arrow}{_value(v)}" for arrow, v in values if v is not None and v < FLOOR)
    return (x, y, text) if text else None


def _notes(ax, marks: Sequence[tuple | None]) -> None:
    """Write the floor notes under their points, a line lower where one would run into the last."""
    placed: list[tuple[float, int]] = []  # (display x, line) of the notes written so far
    ax.get_xlim(), ax.get_ylim()  # settle the limits the positions are read against
    for x, y, text in sorted((m for m in marks if m), key=lambda m: ax.transData.transform((m[0], m[1]))[0]):
        px = ax.transData.transform((x, y))[0]
        line = next(k for k in range(len(placed) + 1) if all(abs(px - q) > 48 or k != l for q, l in placed))
        placed.append((px, line))
        ax.annotate(text, (x, y), xytext=(0, -6 - 8 * line), textcoords="offset points", ha="center", va="top",
                    fontsize=6.5, color="0.2", annotation_clip=False)


def _label(ax, x: float, y: float, text: str) -> None:
    """A point's name, set toward the inside of its panel so that it is never cut off."""
    fx, fy = ax.transAxes.inverted().transform(ax.transData.transform((x, y)))
    right = fx > 0.5
    ax.annotate(text, (x, y), textcoords="offset points", xytext=(-7 if right else 7, -9 if fy > 0.9 else 6),
                ha="right" if right else "left", va="top" if fy > 0.9 else "bottom", fontsize=7)


def pareto_plot(rows: Sequence, path: Path) -> None:
    from .coverage import pareto_front

    targets = _targets(rows)
    if not targets:
        return
    lines, cols = -(-len(targets) // PER_ROW), min(len(targets), PER_ROW)
    fig, axes = plt.subplots(lines, cols, figsize=(4.8 * cols, 4.2 * lines), squeeze=False, layout="constrained")
    for ax in axes.flat[len(targets):]:
        ax.set_visible(False)
    for ax, target in zip(axes.flat, targets):
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
        ax.set_xscale("log")
        ax.set_ylim(BOTTOM, 1.05)
        ax.set_xlim(*ax.get_xlim())  # fixed, so that labels are placed against the final panel
        _floor_line(ax)
        _notes(ax, [_below(max(r.bits, 1), max(r.coverage, FLOOR), [("↓", r.coverage)]) for r in pool])
        for r in pool:
            if r.family == "reference":
                _label(ax, max(r.bits, 1), max(r.coverage, FLOOR), r.theory)
        _log_ticks(ax.xaxis)
        ax.set_title(target, fontsize=10)
        ax.set_xlabel("size (bits)")
        ax.set_ylabel(f"coverage (test R²)\n{FROM_FLOOR}", fontsize=8)
        ax.grid(alpha=0.3)
    _save_with_legend(fig, axes[0][0], path)


def _bars(ax, groups: Sequence[str], series: Sequence[tuple[str, Mapping[str, float], dict]]) -> None:
    """Grouped bars of R² (one group per site, one bar per series): a value below FLOOR is a
    hatched bar down to the floor with the value under it; a value too close to 0 for a bar to
    show is a thick tick with the value written over it."""
    width, marks = 0.8 / max(len(series), 1), []
    for k, (label, values, style) in enumerate(series):
        xs = [j + k * width for j, g in enumerate(groups) if g in values]
        ys = [values[g] for g in groups if g in values]
        shown = [max(y, FLOOR) for y in ys]
        ax.bar(xs, shown, width, label=label, hatch=["////" if y < FLOOR else "" for y in ys], **style)
        for x, y, s in zip(xs, ys, shown):
            marks.append(_below(x, s, [("↓", y)]))
            if FLOOR <= y and abs(y) < FLAT:
                ax.plot([x - width * 0.45, x + width * 0.45], [y, y], lw=2.5, solid_capstyle="butt", zorder=4,
                        color=style.get("color", "black"))
                ax.annotate(_value(y), (x, y), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                            fontsize=6, color="0.2")
    ax.axhline(0, color="black", lw=0.6, zorder=1)
    _floor_line(ax)
    ax.set_ylim(BOTTOM, 1.08)
    _notes(ax, marks)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], groups,
                  rotation=30 if len(groups) > 6 or max(map(len, groups), default=0) > 12 else 0,
                  ha="right" if len(groups) > 6 or max(map(len, groups), default=0) > 12 else "center")
    ax.tick_params(labelsize=8)


def site_bars(rows: Sequence, path: Path) -> None:
    targets = _targets(rows)
    if not targets:
        return
    fig, axes = plt.subplots(len(targets), 1, figsize=(9, 3.6 * len(targets)), squeeze=False, layout="constrained")
    for ax, target in zip(axes[:, 0], targets):
        pool = [r for r in rows if r.target == target]
        sites = list(dict.fromkeys(s for r in pool for s in r.r2))
        series = [(r.theory, r.r2, {"color": MARKERS.get(r.family, ("", "tab:purple", 0))[1],
                                    "alpha": 0.55 + 0.45 * (r.family == "reference"),
                                    "edgecolor": "black" if r.family == "reference" else "white", "linewidth": 0.6})
                  for r in pool]
        _bars(ax, sites, series)
        ax.set_ylabel(f"test R²\n({FROM_FLOOR})", fontsize=7)
        ax.set_title(target, fontsize=10)
        ax.legend(fontsize=6.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    _save(fig, path)


def fidelity_bars(sites: Mapping[str, Mapping[str, float]], path: Path, title: str = "") -> None:
    """A fitted theory's R² per site, one bar per mode (``{site: {"teacher-forced": r2, ...}}``)."""
    groups = list(sites)
    modes = list(dict.fromkeys(m for v in sites.values() for m in v))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
    series = [(mode, {s: v[mode] for s, v in sites.items() if mode in v}, {"color": colors[k % len(colors)]})
              for k, mode in enumerate(modes)]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.9 * len(groups)), 3.4), layout="constrained")
    _bars(ax, groups, series)
    ax.set_ylabel(f"test R²\n({FROM_FLOOR})", fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, ncol=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    _save(fig, path)


def bits_bars(parts: Mapping[str, float], path: Path, title: str = "") -> None:
    """What a theory costs, by part: horizontal bars with each part's bits written beside it (a part
    of 0 bits is written, not drawn)."""
    names = list(parts)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.42 * len(names)), layout="constrained")
    ax.barh(range(len(names)), [parts[n] for n in names], color="tab:blue", height=0.6)
    top = max(parts.values(), default=0) or 1
    for k, name in enumerate(names):
        ax.annotate(f"{parts[name]:,.0f}", (parts[name], k), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)  # room for the written values
    ax.set_xlabel("bits", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def _scatter(ax, pool, y_of, floor=None) -> list:
    """Each family's points; returns the floor notes, written once the panel's limits are set."""
    marks = []
    for family, (marker, color, size) in MARKERS.items():
        members = [r for r in pool if r.family == family and y_of(r) is not None]
        if members:
            ys = [y_of(r) if floor is None else max(y_of(r), floor) for r in members]
            ax.scatter([max(r.coverage, FLOOR) for r in members], ys, marker=marker, color=color, s=size,
                       label=family, zorder=3, edgecolors="white", linewidths=0.5)
            marks += [_below(max(r.coverage, FLOOR), y, [("←", r.coverage), ("↓", y_of(r) if floor is not None else None)])
                      for r, y in zip(members, ys)]
    return marks


def counterfactual_plot(rows: Sequence, path: Path) -> None:
    """Per target, each theory's test coverage against what explains more than coverage: its
    counterfactual fidelity (R² under the standard interventions; where no intervention moves
    another site, the KL of outputs, lower is better) and its coverage on a shifted distribution."""
    targets = [t for t in _targets(rows) if any(r.counterfactual for r in rows if r.target == t)]
    if not targets:
        return
    lines, cols = -(-len(targets) // PER_ROW), min(len(targets), PER_ROW)
    fig, axes = plt.subplots(2 * lines, cols, figsize=(4.8 * cols, 3.5 * 2 * lines), squeeze=False, layout="constrained")
    for k in range(len(targets), lines * cols):  # an odd target out leaves its pair of panels empty
        axes[2 * (k // cols)][k % cols].set_visible(False)
        axes[2 * (k // cols) + 1][k % cols].set_visible(False)
    for k, target in enumerate(targets):
        pool = [r for r in rows if r.target == target]
        by_r2 = any(r.counterfactual.get("r2") is not None for r in pool if r.counterfactual)
        key = "r2" if by_r2 else "kl"
        top, bottom = axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols]
        notes = {top: _scatter(top, pool, lambda r: (r.counterfactual or {}).get(key), FLOOR if by_r2 else None)}
        top.set_ylabel(f"counterfactual R²\n({FROM_FLOOR})" if by_r2 else "counterfactual KL of outputs (symlog)",
                       fontsize=8)
        if by_r2:
            top.set_ylim(BOTTOM, 1.05)
            _floor_line(top)
        else:
            top.set_yscale("symlog", linthresh=1e-3)
        notes[bottom] = _scatter(bottom, pool, lambda r: r.coverage_shifted, FLOOR)
        if not any(r.coverage_shifted is not None for r in pool):
            bottom.text(0.5, 0.5, "no named shift for this target", transform=bottom.transAxes, ha="center",
                        va="center", fontsize=8, color="0.35")
        bottom.set_ylabel(f"coverage on a shifted distribution\n({FROM_FLOOR})", fontsize=8)
        bottom.set_ylim(BOTTOM, 1.05)
        _floor_line(bottom)
        top.set_title(target, fontsize=10)
        for ax in (top, bottom):
            ax.set_xlim(BOTTOM, 1.05)
            _floor_line(ax, horizontal=False)
            ax.set_xlabel("coverage (test)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            _notes(ax, notes[ax])
    _save_with_legend(fig, axes[0][0], path)
