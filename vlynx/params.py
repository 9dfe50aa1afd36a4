"""Exact count of the trainable parameters V-LynX adds to a backbone (paper Tables 1-4, B1)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vlynx.adapters import (
    LLM_ADAPTER,
    LLM_LORA,
    VISION_LORA,
    LoraSettings,
    adapter_parameter_count,
    add_llm_adapter,
    add_vision_adapter,
)
from vlynx.stage_configs import llm_alpha_for, vision_alpha_for


@dataclass(frozen=True)
class AddedParameters:
    vision_lora: int  # one modality's encoder LoRA
    llm_lora: int
    vision_layout: str = field(default="", compare=False)  # the Linears the vision LoRA sits on, as counted
    notes: tuple[str, ...] = field(default=(), compare=False)  # the backbone's remarks on the count

    @property
    def total(self) -> int:
        return self.vision_lora + self.llm_lora

    def as_dict(self) -> dict[str, int]:
        return {"vision_lora": self.vision_lora, "llm_lora": self.llm_lora, "total": self.total}


def count_added_parameters(model: str, vision_rank: int = VISION_LORA.rank, llm_rank: int = LLM_LORA.rank,
                           trust_remote_code: bool = False) -> AddedParameters:
    """Attach real PEFT adapters to the architecture on the meta device and count them (no weights needed)."""
    from vlynx.backbones import load_backbone

    backbone = load_backbone(model, empty=True, trust_remote_code=trust_remote_code)
    modality = "modality"
    add_vision_adapter(backbone, modality, LoraSettings(vision_rank, vision_alpha_for(vision_rank)))
    add_llm_adapter(backbone, LoraSettings(llm_rank, llm_alpha_for(llm_rank)))
    return AddedParameters(
        vision_lora=adapter_parameter_count(backbone, modality),
        llm_lora=adapter_parameter_count(backbone, LLM_ADAPTER),
        vision_layout=_adapted_linears(backbone.model, modality),
        notes=tuple(backbone.parameter_notes(vision_rank)),
    )


def _adapted_linears(model, adapter: str) -> str:
    """The Linears adapter `adapter` sits on, by name: "q_proj, k_proj (x24 each; 48 Linears)"."""
    names = Counter(_short_name(name) for name, module in model.named_modules()
                    if adapter in getattr(module, "lora_A", {}))
    counts = set(names.values())
    each = f"x{counts.pop()} each; " if len(counts) == 1 else ""
    listed = ", ".join(name if each else f"{name} x{count}" for name, count in names.items())
    return f"{listed} ({each}{sum(names.values())} Linears)"


def _short_name(name: str) -> str:
    """A module's own name, with its parent's where it is a list index ("merger.mlp.0" -> "mlp.0")."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
