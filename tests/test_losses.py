"""The alignment losses equal the formulas of docs/method.md §2 (eq. 4-9), recomputed by hand.

The independent computation hooks each SigLIP attention module's *input* hidden states,
projects them again with q_proj/k_proj/v_proj, and evaluates softmax(QKᵀ/√d)V with
explicit matmuls; the token statistics come from a separate `encode` call.
"""
from __future__ import annotations

import math

import pytest
import torch

from vlynx.adapters import LoraSettings, add_vision_adapter, encode, route, set_trainable
from vlynx.losses import AlignmentLossSettings, alignment_losses, distribution_loss

MODALITY = "audio"


@pytest.fixture
def setup(tiny_backbone):
    backbone = tiny_backbone
    add_vision_adapter(backbone, MODALITY, LoraSettings(rank=4, alpha=8, dropout=0.0))
    set_trainable(backbone, [MODALITY])
    generator = torch.Generator().manual_seed(3)
    # Non-zero LoRA B so the adapter actually changes the encoder (PEFT starts B at zero).
    with torch.no_grad():
        for name, parameter in backbone.model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    layout = backbone.layout
    shape = (layout.num_layers, layout.num_heads, layout.num_positions, layout.head_dim)
    reference = {
        "keys": torch.randn(shape, generator=generator),
        "values": torch.randn(shape, generator=generator),
        "token_mean": torch.randn(backbone.llm_hidden_size, generator=generator, dtype=torch.float64),
        "token_var": torch.rand(backbone.llm_hidden_size, generator=generator, dtype=torch.float64) + 0.5,
    }
    pixels = torch.randn(2, 3, 3, backbone.image_size, backbone.image_size, generator=generator)  # (B, F, 3, S, S)
    return backbone, reference, pixels


def _hand_attention_terms(backbone, reference, pixels, pooled=True, after_out_proj=True):
    """Per layer (A_l, Ā_l) from the formulas, with hidden states captured by forward pre-hooks."""
    modules = backbone.attention_modules()
    hidden = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, kwargs, i=i: hidden.__setitem__(i, kwargs.get(
        "hidden_states", args[0] if args else None)), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        with route(backbone, MODALITY):
            backbone.encode_frames(pixels)
            layout = backbone.layout
            d = layout.head_dim
            keep = torch.tensor([r * 4 + c for r in (0, 2) for c in (0, 2)]) if pooled else torch.arange(16)
            terms = []
            for layer, module in enumerate(modules):
                x = hidden[layer]  # (frames, positions, hidden)
                frames, positions, _ = x.shape

                def heads(t):
                    return t.view(frames, positions, layout.num_heads, d).transpose(1, 2)

                q, k, v = heads(module.q_proj(x)), heads(module.k_proj(x)), heads(module.v_proj(x))
                a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v  # eq. (4)
                kr, vr = reference["keys"][layer], reference["values"][layer]
                qs = q[:, :, keep]
                ar = torch.softmax(qs @ kr.transpose(-1, -2) / math.sqrt(d), dim=-1) @ vr  # eq. (5)
                a = a[:, :, keep].transpose(1, 2).reshape(frames, len(keep), -1)
                ar = ar.transpose(1, 2).reshape(frames, len(keep), -1)
                if after_out_proj:
                    a, ar = module.out_proj(a), module.out_proj(ar)
                terms.append((a, ar))
    finally:
        for handle in handles:
            handle.remove()
    return terms


def _losses(backbone, reference, pixels, settings):
    return alignment_losses(backbone, MODALITY, pixels, reference["keys"], reference["values"],
                            reference["token_mean"], reference["token_var"], settings)


def test_pooled_positions_of_tiny_grid(tiny_backbone):
    # 4x4 grid, rows/cols 0 and 2 kept by 2x pooling.
    assert tiny_backbone.pooled_positions().tolist() == [0, 2, 8, 10]


@pytest.mark.parametrize("kind,pooled,after", [("l1", True, True), ("mse", True, True),
                                                ("l1", False, True), ("l1", True, False)])
def test_attention_loss_matches_formula(setup, kind, pooled, after):
    backbone, reference, pixels = setup
    settings = AlignmentLossSettings(attn_loss=kind, no_dist=True, all_queries=not pooled, before_out_proj=not after)
    got = _losses(backbone, reference, pixels, settings)
    terms = _hand_attention_terms(backbone, reference, pixels, pooled, after)
    per_layer = [((a - r).abs().mean() if kind == "l1" else ((a - r) ** 2).mean()) for a, r in terms]
    expected = sum(per_layer) / len(per_layer)  # eq. (6)
    torch.testing.assert_close(got["attn"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["loss"], expected, rtol=1e-5, atol=1e-6)
    assert got["dist"].item() == 0.0


@pytest.mark.parametrize("kind", ["l2norm", "mse"])
def test_distribution_loss_matches_formula(setup, kind):
    backbone, reference, pixels = setup
    got = _losses(backbone, reference, pixels, AlignmentLossSettings(dist_loss=kind, no_attn=True))
    tokens = encode(backbone, pixels, MODALITY).detach().double().reshape(-1, backbone.llm_hidden_size)
    n = tokens.shape[0]
    assert n == 2 * backbone.tokens_per_video(3)  # every token of the batch, newline included
    mean = tokens.sum(0) / n
    var = ((tokens - mean) ** 2).sum(0) / n  # population variance, eq. (7)
    dm, dv = mean - reference["token_mean"], var - reference["token_var"]
    if kind == "l2norm":
        expected = dm.pow(2).sum().sqrt() + dv.pow(2).sum().sqrt()  # eq. (8), unsquared norms
    else:
        expected = dm.pow(2).mean() + dv.pow(2).mean()
    torch.testing.assert_close(got["dist"].double(), expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(got["loss"].double(), 0.01 * expected, rtol=1e-4, atol=1e-8)


def test_total_loss_is_attn_plus_lambda_dist(setup):
    backbone, reference, pixels = setup
    got = _losses(backbone, reference, pixels, AlignmentLossSettings(lambda_dist=0.25))
    attn = _losses(backbone, reference, pixels, AlignmentLossSettings(no_dist=True))["attn"]
    dist = _losses(backbone, reference, pixels, AlignmentLossSettings(no_attn=True))["dist"]
    torch.testing.assert_close(got["loss"], attn + 0.25 * dist)  # eq. (9)


def test_distribution_loss_zero_at_reference():
    tokens = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    mean, var = torch.tensor([2.0, 4.0], dtype=torch.float64), torch.tensor([1.0, 4.0], dtype=torch.float64)
    assert distribution_loss(tokens, mean, var).item() == 0.0
    # ‖(1,0)‖ + ‖(0,-3)‖ = 1 + 3 by hand
    assert distribution_loss(tokens, mean - torch.tensor([1.0, 0.0], dtype=torch.float64),
                             var + torch.tensor([0.0, 3.0], dtype=torch.float64)).item() == pytest.approx(4.0)


def _grads(backbone, reference, pixels, settings):
    backbone.model.zero_grad(set_to_none=True)
    _losses(backbone, reference, pixels, settings)["loss"].backward()
    return {n: p.grad for n, p in backbone.model.named_parameters() if p.grad is not None}


def test_gradients_reach_only_the_modality_lora(setup):
    backbone, reference, pixels = setup
    add_vision_adapter(backbone, "depth", LoraSettings(rank=4, alpha=8, dropout=0.0))
    set_trainable(backbone, [MODALITY])
    grads = _grads(backbone, reference, pixels, AlignmentLossSettings())
    assert grads and all(f".{MODALITY}." in n and "lora_" in n for n in grads)
    # every attention and MLP LoRA of the modality receives a gradient
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
        assert any(proj in n and grads[n].abs().sum() > 0 for n in grads), proj
    assert not any(p.requires_grad for n, p in backbone.model.named_parameters() if f".{MODALITY}." not in n)


def test_stop_grad_reference_keeps_only_the_target_branch(setup):
    backbone, reference, pixels = setup
    stopped = _grads(backbone, reference, pixels, AlignmentLossSettings(no_dist=True, stop_grad_reference=True))
    # Independent: the same L1 with the reference responses computed by hand and detached.
    backbone.model.zero_grad(set_to_none=True)
    terms = _hand_attention_terms(backbone, reference, pixels)
    loss = sum((a - r.detach()).abs().mean() for a, r in terms) / len(terms)
    loss.backward()
    expected = {n: p.grad for n, p in backbone.model.named_parameters() if p.grad is not None}
    assert set(stopped) == set(expected)
    for name in expected:
        torch.testing.assert_close(stopped[name], expected[name], rtol=1e-4, atol=1e-7)
    # Without stop-gradient the reference branch adds gradient to q_proj's LoRA: results differ.
    full = _grads(backbone, reference, pixels, AlignmentLossSettings(no_dist=True))
    q_names = [n for n in full if "q_proj.lora_A" in n]
    assert any(not torch.allclose(full[n], stopped[n]) for n in q_names)
