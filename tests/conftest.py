"""Shared fixtures: tiny LLaVA-OneVision backbones and checkpoints built offline."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no hub look-ups (they retry for minutes before failing)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny matrices: one thread is as fast, and far faster when other processes share the cores.
torch.set_num_threads(1)


@pytest.fixture
def tiny_backbone():
    """A randomly initialised tiny LLaVA-OneVision (seed 0), no adapters."""
    from vlynx.backbones import load_backbone

    return load_backbone("tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny LLaVA-OneVision checkpoint + word tokenizer saved with `save_pretrained`, loadable by path."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from vlynx.backbones import preset_config
    from vlynx.word_tokenizer import build_word_tokenizer

    directory = tmp_path_factory.mktemp("tiny-llava-ov")
    torch.manual_seed(1)
    model = LlavaOnevisionForConditionalGeneration(preset_config("tiny"))
    model.save_pretrained(directory)
    build_word_tokenizer(["what colour is the ball ?", "red green blue", "the sound is a bell"]).save_pretrained(
        directory
    )
    return directory


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous in multi-process tests)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(autouse=True)
def _vlynx_log_level_per_test():
    """`vlynx.cli.main` sets the vlynx logger's level (-q, --debug); no test inherits another's."""
    import logging

    logger = logging.getLogger("vlynx")
    level = logger.level
    yield
    logger.setLevel(level)
