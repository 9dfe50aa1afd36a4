"""The pictures of `vlynx diagnose` (matplotlib, the `plot` extra): the interface gap and attention maps."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlynx.errors import VlynxError
from vlynx.files import atomic_path

COLOURS = {"vocabulary": "#000000", "video": "#1f77b4", "before": "#ff7f0e", "after": "#2ca02c"}


def require_matplotlib() -> None:
    """Raise `VlynxError` saying how to install matplotlib when it is missing (checked before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as error:
        raise VlynxError("the pictures of `vlynx diagnose` need matplotlib: pip install 'vlynx[plot]'") from error


def pca_2d(fit: torch.Tensor, groups: Mapping[str, torch.Tensor]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Project each group (k, D) on the first two principal axes of `fit` (n, D).

    Returns the projections and the share of `fit`'s variance each axis explains. Each axis'
    sign is fixed (its largest loading positive) so the picture is the same on every run.
    """
    fit = fit.to(torch.float64)
    centre = fit.mean(0)
    _, singular, axes = torch.linalg.svd(fit - centre, full_matrices=False)  # axes: (r, D)
    axes = axes[:2]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * signs
    explained = (singular.square() / singular.square().sum())[:2]
    return ({name: ((rows.to(torch.float64) - centre) @ axes.T).numpy() for name, rows in groups.items()},
            explained.numpy())


def plot_interface_gap(path: Path, modality: str, vocab: torch.Tensor, video: torch.Tensor,
                       samples: Mapping[str, torch.Tensor], gap: Mapping[str, Any]) -> Path:
    """Left: vocabulary, video and modality tokens (before/after) in 2-D (PCA fitted on video + vocabulary).
    Right: the attention-alignment term of each encoder layer before and after the adapter."""
    figure, (scatter, bars) = _figure(1, 2, (13, 5.2))
    groups = {"video": video, **samples, "vocabulary": vocab}  # the (few, short) word embeddings drawn last, on top
    points, explained = pca_2d(torch.cat([vocab, video]), groups)
    labels = {"vocabulary": "vocabulary embeddings", "video": "video tokens",
              "before": f"{modality} tokens, base encoder (before)", "after": f"{modality} tokens, adapter (after)"}
    for name, xy in points.items():
        marker = {"marker": "x", "s": 14, "alpha": 0.9} if name == "vocabulary" else {"s": 6, "alpha": 0.5}
        scatter.scatter(xy[:, 0], xy[:, 1], color=COLOURS[name], label=f"{labels[name]} ({len(xy)})", **marker)
    scatter.set_xlabel(f"principal axis 1 ({100 * explained[0]:.1f}% of video + vocabulary variance)")
    scatter.set_ylabel(f"principal axis 2 ({100 * explained[1]:.1f}%)")
    scatter.set_title("LLM input space (PCA fitted on video + vocabulary)")
    scatter.legend(loc="best", fontsize=8, markerscale=3)

    passes = [name for name in ("before", "after") if gap.get(name)]
    layers = np.arange(len(gap[passes[0]]["attention_term_per_layer"]))
    width = 0.8 / len(passes)
    for number, name in enumerate(passes):
        values = gap[name]["attention_term_per_layer"]
        bars.bar(layers + (number - (len(passes) - 1) / 2) * width, values, width, color=COLOURS[name],
                 label=f"{name}: mean {gap[name]['attention_term']:.4g}")
    bars.set_xticks(layers, [str(layer) for layer in layers])
    bars.set_xlabel("encoder layer")
    bars.set_ylabel(f"attention-alignment term, eq. 6 ({gap['settings']['attn_loss']})")
    bars.set_title("attention response vs. video keys/values, per layer")
    bars.legend(loc="best", fontsize=8)
    headline = "; ".join(f"{name}: gap to video {gap[name]['modality_gap_to_video']:.3f}, "
                         f"MMD {gap[name]['mmd']:.3f}, eq. 8 {gap[name]['distribution_term']:.3g}" for name in passes)
    figure.suptitle(f"Interface gap of '{modality}' ({headline})", fontsize=10)
    return _save(figure, path)


def plot_attention_maps(path: Path, rows: Sequence[tuple[str, np.ndarray, np.ndarray, float]], question: str,
                        aggregation: str) -> Path:
    """One row per stream: its frames (F, H, W, 3) uint8 with the attention heat (F, h, w) laid over them.

    `rows` holds (stream name, frames, heat, the stream's share of the question's attention).
    One colour scale for the whole figure, so streams compare.
    """
    frames = max(len(images) for _, images, _, _ in rows)
    figure, axes = _figure(len(rows), frames, (1.8 * frames + 1.5, 1.9 * len(rows) + 1.2), squeeze=False)
    top = max(float(heat.max()) for _, _, heat, _ in rows) or 1.0
    shown = None
    for row, (name, images, heat, share) in enumerate(rows):
        for column in range(frames):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(images):
                axis.axis("off")
                continue
            height, width = images[column].shape[:2]
            axis.imshow(images[column])
            shown = axis.imshow(heat[column], cmap="inferno", alpha=0.55, vmin=0.0, vmax=top,
                                extent=(0, width, height, 0), interpolation="nearest")
            if row == len(rows) - 1:
                axis.set_xlabel(f"frame {column}")
        axes[row][0].set_ylabel(f"{name}\n{100 * share:.1f}% of attention", fontsize=9)
    figure.colorbar(shown, ax=[axis for line in axes for axis in line], shrink=0.8,
                    label="mean attention weight per token")
    figure.suptitle(f"LLM attention from the question to each stream's tokens\n\"{question}\"\n({aggregation})",
                    fontsize=9)
    return _save(figure, path)


def _figure(rows: int, columns: int, size: tuple[float, float], squeeze: bool = True):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt.subplots(rows, columns, figsize=size, squeeze=squeeze)


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return Path(path)
