"""Exact count of the trainable parameters V-LynX adds to a backbone (paper Tables 1-4, B1)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

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

    @property
    def total(self) -> int:
        return self.vision_lora + self.llm_lora

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


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
    )
