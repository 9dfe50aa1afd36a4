"""`run_reference`: the reference stage from its config, as `vlynx reference` runs it."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch

from vlynx.distributed import on_rank_zero
from vlynx.outputs import checkpoint_dir_for, claim_output, record_identity, run_identity, save_run
from vlynx.progress import log
from vlynx.reference import collectives
from vlynx.reference.checkpoint import discard_checkpoint
from vlynx.reference.compute import compute_reference
from vlynx.reference.file import ReferenceStats, save_reference
from vlynx.reference.sources import video_sources
from vlynx.stage_configs import ReferenceConfig


def run_reference(config: ReferenceConfig) -> ReferenceStats:
    """Compute the reference statistics `config` describes and write them to `config.out`.

    Beside the output go `OUT.config.yaml` (the resolved config: `--config` repeats the run)
    and `OUT.run.json`. An existing output is refused unless `overwrite`; checkpoints of an
    earlier run (in `OUT.checkpoints` unless `checkpoint_dir`) are refused unless `resume`
    continues them or `overwrite` discards them; they are removed once the output is written.
    Under `torchrun` every rank calls this (a process group is started if none is open), rank 0
    writes the files, and every rank returns the combined statistics. Settings, video lists and
    the output policy are checked before the model is loaded; problems raise `VlynxError`.
    """
    started = time.time()
    config = config.resolved()
    config.check()
    sources = video_sources(config.videos, config.sources or None)
    out = Path(config.out)
    checkpoints = checkpoint_dir_for(out, config.checkpoint_dir)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = _device(config.device, world)

    from vlynx.backbones import load_backbone

    with collectives.process_group(world, device):
        rank, _ = collectives.rank_and_world()
        if rank != 0:
            log.setLevel(logging.ERROR)  # one progress bar and one summary, from rank 0
        # rank 0 locks the output and applies the policy (--overwrite deletes files); all ranks learn the outcome
        with claim_output(out, checkpoints, resume=config.resume, overwrite=config.overwrite) as resume:
            backbone = load_backbone(config.model, device=device, dtype=config.dtype,
                                      trust_remote_code=config.trust_remote_code)
            videos = [path for source in sources for path in source.videos]
            identity = {**run_identity(config, model=backbone.fingerprint(), inputs=videos), "ranks": world}
            on_rank_zero(lambda: record_identity(checkpoints, identity, resuming=resume))
            reference = compute_reference(backbone, sources, config.frames, batch_size=config.batch_size,
                                          workers=config.workers, checkpoint_dir=checkpoints,
                                          checkpoint_every=config.checkpoint_every, resume=resume)
            if rank == 0:
                save_reference(reference, out)
                save_run(config, out, started, inside=False, counts=reference.counts,
                         skipped=len(reference.skipped), fingerprint=reference.fingerprint, identity=identity)
                # every rank wrote its last checkpoint before the collectives that combined the statistics
                discard_checkpoint(checkpoints)
            collectives.barrier()  # no rank returns before the output exists
    return reference


def _device(requested: str | None, world: int) -> str:
    """`requested`, else cuda when available, else cpu; under torchrun plain cuda means cuda:LOCAL_RANK."""
    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and world > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device
