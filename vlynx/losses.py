"""The V-LynX interface-alignment losses (docs/method.md §2, eq. 4-9).

- `layer_distances`: the new modality's attention response in each encoder layer (eq. 4)
  against the response its own queries get from the video reference keys/values (eq. 5),
  one distance per layer (averaged over layers: eq. 6), from the tensors `recorded_layers`
  took during the encoder forward;
- `distribution_loss`: mean and population variance of the projected tokens against the
  video token statistics (eq. 7-8);
- `alignment_losses`: one forward of the modality frames (encoder + its LoRA + projector)
  that returns both, and their weighted sum (eq. 9).

The defaults match the alignment loss of the authors' code (park-jungin/lynx,
`libs/utils/lynx_trainer.py`, `LynXAVQATrainer.compute_loss`, checked line by line):
responses after the adapted out_proj (l. 414), queries at the pooled positions (l. 375),
L1 per layer averaged over layers (l. 416, 599), unsquared L2 norms of the mean and
variance gaps (l. 453), no stop-gradient, and 1.0 x attention + 0.01 x distribution
(l. 601). One default differs on purpose: a modality with k > 1 images per frame
(depth + normals) has each frame's k token sets averaged before the distribution loss,
where the authors' code took every image's tokens as they are; `dist_per_image` gives
theirs (docs/method.md §9). `AlignmentLossSettings` also switches to the paper's
literal MSE wording.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlynx.adapters import as_encoder_videos, average_image_groups, route
from vlynx.backbones.base import Backbone


@dataclass(frozen=True)
class AlignmentLossSettings:
    """How eq. (4)-(9) are realised (the same names as `AlignConfig`); defaults: see the module docstring."""

    attn_loss: str = "l1"  # "l1" (mean abs) | "mse"
    dist_loss: str = "l2norm"  # "l2norm" (unsquared ‖·‖₂) | "mse"
    lambda_dist: float = 0.01
    no_attn: bool = False  # ablation: drop eq. (6)
    no_dist: bool = False  # ablation: drop eq. (8)
    stop_grad_reference: bool = False
    all_queries: bool = False  # default: only the queries at the positions 2x pooling keeps
    before_out_proj: bool = False  # default: compare out_proj(A) with out_proj(Ā), the adapted out_proj
    dist_per_image: bool = False  # True: eq. (7) over every image's tokens, not each frame's average (authors')

    def __post_init__(self) -> None:
        if self.attn_loss not in ("l1", "mse"):
            raise ValueError(f"attn_loss must be 'l1' or 'mse', got {self.attn_loss!r}")
        if self.dist_loss not in ("l2norm", "mse"):
            raise ValueError(f"dist_loss must be 'l2norm' or 'mse', got {self.dist_loss!r}")
        if self.no_attn and self.no_dist:
            raise ValueError("at least one of the attention and distribution losses must be on")


def reference_response(queries: torch.Tensor, reference_keys: torch.Tensor, reference_values: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (5): softmax(Q K̄ᵀ/√d) V̄ for one layer.

    queries (frames, heads, q, d); reference_keys/values (heads, positions, d) -> (frames, heads, q, d).
    `mask` (q, positions) bool: the reference positions each query may attend to (a windowed layer's
    own window, `Backbone.reference_attention_mask`); None: all.
    """
    frames = queries.shape[0]
    keys = reference_keys.to(queries.dtype).unsqueeze(0).expand(frames, -1, -1, -1)
    values = reference_values.to(queries.dtype).unsqueeze(0).expand(frames, -1, -1, -1)
    return F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)  # scale 1/√d, as the encoder's own


def _distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    return (a - b).abs().mean() if kind == "l1" else (a - b).pow(2).mean()


def distribution_loss(tokens: torch.Tensor, token_mean: torch.Tensor, token_var: torch.Tensor,
                      kind: str = "l2norm") -> torch.Tensor:
    """Eq. (7)-(8): tokens (..., D) of the whole batch against the video statistics (D,).

    μ_x, σ²_x are the mean and population variance over every token; the distance is
    ‖μ_x−μ_v‖₂ + ‖σ²_x−σ²_v‖₂ ("l2norm") or the mean squared error of each ("mse").
    """
    flat = tokens.reshape(-1, tokens.shape[-1]).float()  # (tokens, D)
    mean = flat.mean(dim=0)
    var = flat.var(dim=0, unbiased=False)
    mean_v = token_mean.to(device=flat.device, dtype=flat.dtype)
    var_v = token_var.to(device=flat.device, dtype=flat.dtype)
    if kind == "l2norm":
        return torch.linalg.vector_norm(mean - mean_v) + torch.linalg.vector_norm(var - var_v)
    return (mean - mean_v).pow(2).mean() + (var - var_v).pow(2).mean()


@dataclass
class LayerRecord:
    """One encoder layer's tensors at the compared query positions `positions` (None: all): its queries
    (steps, heads, q, d) and its attention output A_l before and after the output projection (steps, q,
    heads*d) and (steps, q, width)."""

    queries: torch.Tensor | None = None
    before: torch.Tensor | None = None
    after: torch.Tensor | None = None
    positions: torch.Tensor | None = None


@contextlib.contextmanager
def recorded_layers(backbone: Backbone, keep: torch.Tensor | None,
                    on_layer: Callable[..., None] | None = None) -> Iterator[dict[int, LayerRecord]]:
    """Record each encoder layer's queries and output-projection input/output at the positions `keep` (None: all).

    The slices are taken while the layer runs, so no full-size activation outlives its layer (under
    gradient checkpointing the layer's own activations are then recomputed, not kept). `on_layer(layer,
    q, k, v)` also sees every layer's full Q/K/V (e.g. to sum the keys of a video pass).
    """
    records: dict[int, LayerRecord] = {}
    select = (lambda t, dim: t) if keep is None else (lambda t, dim: t.index_select(dim, keep))

    def record_queries(layer: int, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> None:
        with _saved_as_usual():
            records.setdefault(layer, LayerRecord(positions=keep)).queries = select(queries, 2)
        if on_layer is not None:
            on_layer(layer, queries, keys, values)

    def record_output(layer: int, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        record = records.setdefault(layer, LayerRecord(positions=keep))
        if record.after is None:  # not the reference response's own pass through out_proj
            with _saved_as_usual():  # (steps, positions, width), whatever order the layer ran them in
                before, after = (backbone.attention_output_as_steps(t) for t in (inputs[0], output))
                record.before, record.after = select(before, 1), select(after, 1)

    with contextlib.ExitStack() as stack:
        stack.enter_context(backbone.capture_attention(on_layer=record_queries))
        for layer in range(backbone.layout.num_layers):
            handle = backbone.output_projection(layer).register_forward_hook(
                lambda _module, inputs, output, layer=layer: record_output(layer, inputs, output))
            stack.callback(handle.remove)
        yield records


def _saved_as_usual() -> contextlib.AbstractContextManager:
    """Tensors saved for backward in here are kept as usual, even inside a checkpointed layer: the slices
    are taken by hooks that recomputation does not run, so checkpointing must not count them."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: tensor, lambda tensor: tensor)


def layer_distances(backbone: Backbone, records: dict[int, LayerRecord], reference_keys: torch.Tensor,
                    reference_values: torch.Tensor, settings: AlignmentLossSettings) -> list[torch.Tensor]:
    """Eq. (4)-(6) per layer: the distance (mean over elements) between the layer's attention response
    A_l and the response Ā_l its queries get from the video reference keys/values (eq. 5).

    When the encoder is gradient-checkpointed (memory first), each layer's Ā_l is computed in its own
    non-reentrant checkpoint too: backward recomputes it from the recorded queries instead of keeping
    the (frames, heads, q, positions) attention weights of every layer, with the vision adapters
    routed as they were for the adapted out_proj. Otherwise it is kept (time first).
    """
    from torch.utils.checkpoint import checkpoint

    from vlynx.adapters import same_routing_in_recomputation

    recompute = getattr(backbone.vision_tower, "is_activation_checkpointing", False)
    distances = []
    for layer, module in enumerate(backbone.attention_modules()):
        record = records[layer]
        target = record.before if settings.before_out_proj else record.after
        mask = backbone.reference_attention_mask(layer)
        if mask is not None:
            keep = record.positions
            mask = (mask if keep is None else mask.index_select(0, keep.cpu())).to(record.queries.device)

        def distance(queries: torch.Tensor, target: torch.Tensor, layer: int = layer, mask: torch.Tensor | None = mask,
                     shape: torch.Size = record.before.shape) -> torch.Tensor:
            with torch.no_grad() if settings.stop_grad_reference else contextlib.nullcontext():
                response = reference_response(queries, reference_keys[layer], reference_values[layer], mask)
                response = response.transpose(1, 2).reshape(shape)  # heads back into channels
                if not settings.before_out_proj:
                    response = backbone.output_projection(layer)(response)  # the adapted one, as for the target
            return _distance(target, response, settings.attn_loss)

        if recompute:
            distances.append(checkpoint(distance, record.queries, target, use_reentrant=False,
                                        context_fn=same_routing_in_recomputation(module)))
        else:
            distances.append(distance(record.queries, target))
    return distances


def alignment_losses(
    backbone: Backbone,
    modality: str,
    pixel_values: torch.Tensor,
    reference_keys: torch.Tensor,
    reference_values: torch.Tensor,
    token_mean: torch.Tensor,
    token_var: torch.Tensor,
    settings: AlignmentLossSettings = AlignmentLossSettings(),
    images_per_frame: int = 1,
) -> dict[str, torch.Tensor]:
    """One forward of modality frames through encoder + `modality`'s LoRA + projector; eq. (9).

    pixel_values (B, F*k, 3, S, S); reference_keys/values (layers, heads, positions, head_dim)
    (eq. 2); token_mean/var (D_llm,) (eq. 3). `images_per_frame` > 1 averages the projected
    tokens of each group of that many images before eq. (7), as the later stages feed them
    to the LLM, unless `settings.dist_per_image`.
    Returns {"loss", "attn", "dist"} (the switched-off component is a detached 0).
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(route(backbone, modality))
        keep = None if settings.all_queries else backbone.query_positions().to(backbone.device)
        records = stack.enter_context(recorded_layers(backbone, keep)) if not settings.no_attn else None
        tokens = backbone.encode_frames(as_encoder_videos(backbone, pixel_values, images_per_frame))  # (B, T, D_llm)
        zero = tokens.new_zeros(())
        attn = zero
        if not settings.no_attn:
            distances = layer_distances(backbone, records, reference_keys, reference_values, settings)
            attn = torch.stack(distances).mean()  # eq. (6): mean over layers

    dist = zero
    if not settings.no_dist:
        if not settings.dist_per_image:
            tokens = average_image_groups(backbone, tokens, images_per_frame)
        dist = distribution_loss(tokens, token_mean, token_var, settings.dist_loss)  # eq. (7)-(8)
    loss = attn + settings.lambda_dist * dist if not settings.no_dist else attn  # eq. (9)
    return {"loss": loss, "attn": attn.detach(), "dist": dist.detach()}
