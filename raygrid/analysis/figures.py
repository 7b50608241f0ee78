"""Figures of the report, drawn from the analysis tables (matplotlib, Agg backend).

Each function takes tables (or plain arrays) and returns PNG bytes, or None when there is nothing
to draw; the report embeds the bytes as data URIs and also writes them as files. Missing cells
are drawn as missing (grey, "—"), never left out.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from raygrid import spec as catalog

MISSING_COLOUR = "#d9d9d9"
DPI = 110


def label(backbone: Any) -> str:
    info = catalog.BACKBONES.get(str(backbone))
    return info.label if info else str(backbone)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return buf.getvalue()


def config_label(disc: Any, weight: Any) -> str:
    if disc == catalog.NO_DISCRIMINATOR:
        return "none"
    return f"{disc} @ {weight:g}" if isinstance(weight, (int, float)) and not math.isnan(weight) else str(disc)


# ---------------------------------------------------------------------------------------------
# Optimization grid
# ---------------------------------------------------------------------------------------------


def backbone_order(names) -> list[str]:
    """The catalog's order (as the paper lists the backbones); unknown names after, sorted."""
    known = [b for b in catalog.BACKBONES if b in set(names)]
    return known + sorted(set(names) - set(known))


def optimization_heatmap(opt: pd.DataFrame, evaluators: list[tuple[str, bool, str | None]]) -> bytes | None:
    """One heatmap per evaluator: fidelity backbone (rows) × discriminator @ weight (columns).

    evaluators: (name, lower_better, backbone) from the evaluator records; values are the
    table's `test/<name>` columns. Colours run from worse (dark) to better (bright) whatever the
    direction; the row whose loss shares the evaluator's backbone is outlined (that evaluator is
    left out of the loss's ranking)."""
    if opt.empty or not evaluators:
        return None
    key = opt.assign(_config=[config_label(d, w) for d, w in zip(opt["discriminator"], opt["adv_weight"])])
    configs = list(dict.fromkeys(key["_config"]))
    backbones = backbone_order(key["backbone"].dropna().unique())
    n = len(evaluators)
    ncols = 1 if len(configs) > 8 else 2
    nrows = math.ceil(n / ncols)
    cell_w = max(4.5, 0.75 * len(configs) + 1.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell_w * ncols, (0.42 * len(backbones) + 1.5) * nrows + 0.6),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (name, lower_better, ev_backbone) in zip(axes.flat, evaluators):
        col = f"test/{name}"
        grid = key.pivot_table(index="backbone", columns="_config", values=col, aggfunc="mean", dropna=False) \
            if col in key else pd.DataFrame()
        grid = grid.reindex(index=backbones, columns=configs)
        values = grid.to_numpy(float)
        shown = -values if lower_better else values  # bright = better
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad=MISSING_COLOUR)
        ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(configs)), configs, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(backbones)), [label(b) for b in backbones], fontsize=7)
        arrow = "lower is better" if lower_better else "higher is better"
        ax.set_title(f"{name} ({arrow})", fontsize=8, loc="left")
        finite = shown[np.isfinite(shown)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
        big = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
        fmt = "{:.2f}" if big >= 10 else "{:.3f}"
        for i in range(len(backbones)):
            for j in range(len(configs)):
                v = values[i, j]
                text = "—" if not np.isfinite(v) else fmt.format(v)
                colour = "black" if not np.isfinite(v) or shown[i, j] > mid else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=colour)
            if ev_backbone is not None and backbones[i] == ev_backbone:
                ax.add_patch(plt.Rectangle((-0.5, i - 0.5), len(configs), 1, fill=False, ec="#d62728", lw=1.5))
    fig.suptitle("SR evaluator panel per fidelity loss (rows) and adversarial setting (columns); bright = better.\n"
                 "Grey '—': no trial of the cell reached the common step. Red outline: the evaluator is built on that loss's backbone.",
                 fontsize=8, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# IQA rank vs optimization rank
# ---------------------------------------------------------------------------------------------


def _interval(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{v:+.2f} [{lo:+.2f}, {hi:+.2f}]"
    return f"{v:+.2f}"


def rank_scatter(summary: pd.DataFrame, ranks: pd.DataFrame, variant: str, settings: list[str]) -> bytes | None:
    """IQA rank (x) against optimization rank (y) per setting, with Spearman/Kendall and their
    bootstrap intervals in the title; points on the diagonal rank the same in both roles.
    summary/ranks: the rows of one generator and panel (raygrid.analysis.stats.asymmetry)."""
    panels = [s for s in settings
              if ranks[(ranks["iqa_variant"] == variant) & (ranks["setting"] == s) & ranks["included"]].shape[0]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
    for ax, setting in zip(axes[0], panels):
        r = ranks[(ranks["iqa_variant"] == variant) & (ranks["setting"] == setting) & ranks["included"]]
        s = summary[(summary["iqa_variant"] == variant) & (summary["setting"] == setting)].iloc[0]
        k = max(int(s["n_backbones"]), 1)
        ax.plot([0.5, k + 0.5], [0.5, k + 0.5], color="#999999", lw=1, ls="--", zorder=0)
        ax.scatter(r["iqa_rank"], r["opt_rank"], s=60, color="#1f77b4", zorder=2)
        for _, row in r.iterrows():
            ax.annotate(label(row["backbone"]), (row["iqa_rank"], row["opt_rank"]), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        ax.set_xlim(0.5, k + 0.5)
        ax.set_ylim(k + 0.5, 0.5)  # rank 1 at the top
        ax.set_xticks(range(1, k + 1))
        ax.set_yticks(range(1, k + 1))
        ax.set_xlabel("IQA rank (1 = best SRCC)")
        ax.set_ylabel("optimization rank (1 = best SR outputs)")
        ax.set_title(f"{setting}\nSpearman ρ {_interval(s['spearman'], s['spearman_lo'], s['spearman_hi'])}\n"
                     f"Kendall τ {_interval(s['kendall'], s['kendall_lo'], s['kendall_hi'])}", fontsize=8)
        ax.grid(alpha=0.3)
        left = ranks[(ranks["iqa_variant"] == variant) & (ranks["setting"] == setting) & ~ranks["included"]]
        if len(left):
            ax.text(0.02, 0.02, "not ranked: " + ", ".join(f"{label(b)} ({n})" for b, n in zip(left["backbone"], left["note"])),
                    transform=ax.transAxes, fontsize=7, color="#b00", va="bottom", wrap=True)
    fig.suptitle(f"IQA rank vs optimization rank (IQA: {variant}; {int(s['level'] * 100)}% bootstrap intervals)",
                 fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Training curves
# ---------------------------------------------------------------------------------------------


def training_curves(histories: dict[str, dict[str, list[tuple[int, float]]]], names: dict[str, str],
                    keys: list[str], title: str) -> bytes | None:
    """One panel per metric key, one line per run (x = training step)."""
    keys = [k for k in keys if any(k in h for h in histories.values())]
    if not keys:
        return None
    cols = min(len(keys), 3)
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for run_id, hist in histories.items():
            if key in hist:
                steps, values = zip(*hist[key])
                ax.plot(steps, values, marker="o", ms=2.5, lw=1.2, label=names.get(run_id, run_id[:8]))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0.04 + 0.025 * math.ceil(len(labels) / 4), 1, 1))
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# SR samples
# ---------------------------------------------------------------------------------------------


def image_strip(tiles: list[tuple[str, np.ndarray]], title: str) -> bytes | None:
    """Images (H×W×3 floats in [0, 1]) side by side with their captions."""
    if not tiles:
        return None
    n = len(tiles)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (caption, img) in zip(axes.flat, tiles):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=9, x=0.01, ha="left")
    fig.tight_layout(h_pad=1.5)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# Transfer
# ---------------------------------------------------------------------------------------------

INIT_COLOURS = {"imagenet": "#1f77b4", "discriminator": "#d62728", "random": "#7f7f7f"}


def transfer_bars(table: pd.DataFrame, metric: str = "srcc") -> bytes | None:
    """Test SRCC per (backbone, protocol, test set), one bar per initialisation, with the runs'
    bootstrap intervals; a missing initialisation leaves an empty slot marked "—"."""
    if table.empty or table[metric].notna().sum() == 0:
        return None
    t = table.copy()
    t["_group"] = [f"{label(b)}\n{k}: {tr} → {te}" for b, k, tr, te in zip(t["backbone"], t["kind"], t["train_set"], t["test_set"])]
    groups = list(dict.fromkeys(t["_group"]))
    inits = [i for i in ("imagenet", "discriminator", "random") if i in set(t["init"])] + \
        sorted(set(t["init"].dropna()) - {"imagenet", "discriminator", "random"})
    width = 0.8 / max(len(inits), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) * len(inits) / 2 + 2), 3.6))
    for j, init in enumerate(inits):
        sub = t[t["init"] == init].groupby("_group")[[metric, f"{metric}_lo", f"{metric}_hi"]].mean()
        x = np.arange(len(groups)) + (j - (len(inits) - 1) / 2) * width
        vals = sub.reindex(groups)
        v = vals[metric].to_numpy(float)
        lo = v - vals[f"{metric}_lo"].to_numpy(float)
        hi = vals[f"{metric}_hi"].to_numpy(float) - v
        ok = np.isfinite(v)
        ax.bar(x[ok], v[ok], width, color=INIT_COLOURS.get(init, None), label=init,
               yerr=np.vstack([np.nan_to_num(lo[ok]), np.nan_to_num(hi[ok])]), capsize=2)
        for xi in x[~ok]:
            ax.text(xi, 0.02, "—", ha="center", fontsize=9)
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set_ylabel(f"test {metric.upper()}")
    ax.legend(fontsize=7, title="initialisation", title_fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"IQA transfer: test {metric.upper()} by initialisation (mean over seeds; bars = runs' bootstrap CI)",
                 fontsize=9, loc="left")
    fig.tight_layout()
    return _png(fig)
