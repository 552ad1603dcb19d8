"""The figures the paper explains itself with: the task-similarity heatmap (Fig. 1), the accuracy
along the linear path between two experts (Fig. 3a) and the landscape over the plane through three
experts (Fig. 3c). PNGs written atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pizoo.outputs import SOFTWARE
from pizoo.zoo import atomic_write

PNG_METADATA = {"Software": SOFTWARE}  # what lets a rerun replace its own figure (pizoo.outputs)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt


def cluster_order(sim: np.ndarray) -> list[int]:
    """Order tasks so that similar ones sit together (average-linkage on 1 - similarity)."""
    n = sim.shape[0]
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - sim, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), method="average"))]


LABELLED = 60  # tasks up to which the heatmap names each row and column


def grouped_order(order: Sequence[int], groups: Sequence[str]) -> list[int]:
    """The clustered order, made contiguous per group (groups in the order they first appear)."""
    first = {}
    for i in order:
        first.setdefault(groups[i], len(first))
    return sorted(order, key=lambda i: first[groups[i]])


def heatmap(names: Sequence[str], sim: np.ndarray, out: Path, title: str,
            groups: Sequence[str] | None = None) -> list[str]:
    """Write the similarity heatmap in clustered order (contiguous per group, with lines between
    groups and the group in each label, when `groups` names one per task); return that order."""
    plt = _pyplot()
    order = cluster_order(sim)
    if groups is not None:
        order = grouped_order(order, groups)
        groups = [groups[i] for i in order]
    names = [names[i] for i in order]
    sim = sim[np.ix_(order, order)]
    # at most 16 inches (about 1900 px at 120 dpi): a figure any screen shows whole
    size = min(16.0, max(4.0, 0.6 * len(names) + 2.5))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    off = sim[~np.eye(len(names), dtype=bool)]
    vmin = float(off.min()) if off.size else 0.0
    im = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=1.0, interpolation="nearest")
    _label_cells(ax, names, sim, vmin, groups)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=120, format="png", metadata=PNG_METADATA))
    plt.close(fig)
    return list(names)


def _label_cells(ax, names: list[str], sim: np.ndarray, vmin: float, groups: Sequence[str] | None) -> None:
    """Tick labels (with the group) while they are readable, values in the cells of a small matrix,
    and white lines between groups."""
    if len(names) <= LABELLED:
        font = 10 if len(names) <= 20 else max(4, int(10 * 20 / len(names)))
        shown = [f"{n} [{g}]" for n, g in zip(names, groups)] if groups is not None else names
        ax.set_xticks(range(len(names)), shown, rotation=45 if len(names) <= 20 else 90, ha="right",
                      fontsize=font)
        ax.set_yticks(range(len(names)), shown, fontsize=font)
    else:  # too many to read: the order and the names are in the CSV and the JSON
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{len(names)} tasks in clustered order")
    if len(names) <= 15:
        for i in range(len(names)):
            for j in range(len(names)):
                dark = sim[i, j] < (vmin + 1.0) / 2
                ax.text(j, i, f"{sim[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
    if groups is not None:
        for i in range(1, len(names)):
            if groups[i] != groups[i - 1]:
                ax.axhline(i - 0.5, color="white", linewidth=2)
                ax.axvline(i - 0.5, color="white", linewidth=2)


def curve(ts: Sequence[float], accs: Sequence[float], out: Path, target: str, other: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(ts, accs, marker="o", markersize=3)
    ax.set_xlabel(f"t   ((1-t)·φ_{target} + t·φ_{other})")
    ax.set_ylabel(f"accuracy on {target}")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"linear path {target} → {other}")
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=120, format="png", metadata=PNG_METADATA))
    plt.close(fig)


MARKERS = {"target": ("*", 260), "source": ("o", 110), "soup": ("s", 90), "pi": ("P", 170)}


def plane(result: dict, out: Path) -> None:
    """Loss and accuracy over the plane (pizoo.landscape), the experts, soup and π result marked."""
    plt = _pyplot()
    n = len(result["values"])
    X, Y = (np.array([g[c] for g in result["grid"]]).reshape(n, n) for c in ("x", "y"))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    for ax, key, cmap in ((axes[0], "loss", "viridis_r"), (axes[1], "accuracy", "viridis")):
        Z = np.array([g[key] for g in result["grid"]]).reshape(n, n)
        cs = ax.contourf(X, Y, Z, levels=14, cmap=cmap)
        fig.colorbar(cs, ax=ax, fraction=0.046, pad=0.04)
        for p in result["points"]:
            marker, size = MARKERS[p["role"]]
            ax.scatter([p["x"]], [p["y"]], marker=marker, s=size, c="white", edgecolors="black", zorder=3)
            ax.annotate(f"{p['name']}\n{p[key]:.3f}", (p["x"], p["y"]), textcoords="offset points", xytext=(6, 6),
                        fontsize=8, color="black", bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.7})
        ax.set_aspect("equal")
        ax.set_title(f"{key} on {result['target']} (eval split, {result['n']} examples)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"plane through {result['target']}, {result['with'][0]}, {result['with'][1]}", fontsize=11)
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=120, format="png", metadata=PNG_METADATA))
    plt.close(fig)


def write_matrix_csv(names: Sequence[str], sim: np.ndarray, out: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["task", *names])
    for name, row in zip(names, sim):
        w.writerow([name, *(f"{v:.6f}" for v in row)])
    atomic_write(out, buf.getvalue())
