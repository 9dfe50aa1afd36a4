"""What a stage run writes besides its result: the output policy, run records, run identity, a lock.

One policy for every stage:

- checkpoints live in `OUT.checkpoints` beside the output (or the config's `checkpoint_dir`);
- an existing output is refused unless `--overwrite`, which removes it and its checkpoints first;
- checkpoints of an earlier run are continued only with `--resume`, and only when the run that
  made them is the same: its identity (model fingerprint, adapter contents, the settings that
  change results, the inputs) is recorded beside them and compared, naming the first field
  that differs;
- while a run writes an output it holds `OUT.lock`: a second process writing the same output
  is refused instead of both doing the work;
- the resolved config and a run record (versions, command line, wall time, results) are
  written with the output.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vlynx.config import CONFIG_FILE, RUN_FILE, StageConfig
from vlynx.errors import VlynxError
from vlynx.fingerprints import first_difference
from vlynx.progress import log

command_line: list[str] | None = None  # set by the CLI; recorded in every run record
IDENTITY_FILE = "vlynx_identity.json"


def checkpoint_dir_for(out: str | Path, checkpoint_dir: str | Path | None) -> Path:
    """Where a stage's checkpoints go: `checkpoint_dir`, or `OUT.checkpoints` beside the output."""
    return Path(checkpoint_dir) if checkpoint_dir else Path(f"{Path(out)}.checkpoints")


def prepare_output(out: Path, checkpoints: Path, *, resume: bool, overwrite: bool) -> bool:
    """Apply the overwrite/resume policy before a run; True when earlier checkpoints are to be continued.

    `--overwrite` removes the old output and its checkpoints. Without it an existing output is
    refused unless resuming, and checkpoints of an earlier run are refused unless `--resume`.
    `--resume` with no checkpoint starts from scratch (and says so).
    """
    if resume and overwrite:
        raise VlynxError("--resume continues the earlier run and --overwrite discards it: choose one")
    # the identity alone is what a run that stopped before its first checkpoint leaves
    has_checkpoints = checkpoints.is_dir() and any(p.name != IDENTITY_FILE for p in checkpoints.iterdir())
    if overwrite:
        for path in (out, checkpoints):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        return False
    if out.exists() and not resume and not (out.is_dir() and not any(out.iterdir())):  # an empty folder is free
        raise VlynxError("output already exists (pass --overwrite to replace it)", out)
    if resume and out.exists() and out != checkpoints:  # written last: the run it came from finished
        raise VlynxError("output is complete: nothing to resume (pass --overwrite to replace it)", out)
    if has_checkpoints and not resume:
        raise VlynxError("holds checkpoints of an earlier run: pass --resume to continue it or --overwrite to "
                         "start over", checkpoints)
    if resume and not has_checkpoints:
        log.info("--resume: no checkpoint in %s, starting from scratch", checkpoints)
    return resume and has_checkpoints


def run_file_paths(out: str | Path, inside: bool = True) -> tuple[Path, Path]:
    """(config file, run record) of an output: inside a directory output, beside a file output."""
    out = Path(out)
    if inside:
        return out / CONFIG_FILE, out / RUN_FILE
    return out.with_name(f"{out.name}.config.yaml"), out.with_name(f"{out.name}.run.json")


def save_run(config: StageConfig, out: str | Path, started: float, *, inside: bool = True,
             **results: Any) -> None:
    """Write the resolved config and the run record (versions, command line, wall time, `results`).

    `started` is the run's `time.time()` at its start.
    """
    import torch
    import transformers

    from vlynx import __version__
    from vlynx.files import write_text_atomic

    config_path, record_path = run_file_paths(out, inside)
    record = {
        "stage": config.STAGE,
        "versions": {"vlynx": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "command": command_line,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "config": config.to_dict(),
        "results": results,
    }
    write_text_atomic(config_path, config.to_yaml())
    write_text_atomic(record_path, json.dumps(record, indent=2, default=str) + "\n")


def read_run_record(directory: str | Path) -> dict[str, Any] | None:
    """The run record inside an output directory, or None when it has none."""
    path = run_file_paths(directory)[1]
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VlynxError(f"invalid JSON at line {error.lineno}: {error.msg}", path) from error


# ----- run identity -------------------------------------------------------------------------------
def run_identity(config: StageConfig, *, model: Mapping[str, Any], inputs: Iterable[str | Path],
                 adapters: Mapping[str, str | Path] | None = None) -> dict[str, Any]:
    """What produced a resumable output: the stage, the model's fingerprint, each adapter's content
    digest, the settings that change results (`config.RESULT_FREE` left out) and a digest of the inputs."""
    settings = {k: v for k, v in config.to_dict().items() if k not in config.RESULT_FREE}
    return {
        "stage": config.STAGE,
        "model": dict(model),
        "adapters": {name: directory_digest(path) for name, path in (adapters or {}).items()},
        "settings": settings,
        "inputs": inputs_digest(inputs),
    }


def inputs_digest(paths: Iterable[str | Path]) -> str:
    """sha256 over the inputs in order: each path with its size (a file's content when it is small)."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        size = path.stat().st_size if path.is_file() else -1
        digest.update(f"{path}\0{size}\n".encode())
        if 0 <= size <= 1 << 20:  # annotation files: their content, not just their size
            digest.update(path.read_bytes())
    return digest.hexdigest()


def directory_digest(path: str | Path) -> str:
    """sha256 of the weight files (`*.safetensors`) below `path`, by relative name and content."""
    path = Path(path)
    digest = hashlib.sha256()
    for file in sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def record_identity(directory: Path, identity: Mapping[str, Any], *, resuming: bool) -> None:
    """Resuming: refuse checkpoints of a different run. Otherwise: record `identity` in `directory`."""
    from vlynx.files import write_text_atomic

    path = Path(directory) / IDENTITY_FILE
    if resuming:
        check_identity(path, identity, "checkpoints")
    else:
        write_text_atomic(path, json.dumps(identity, indent=2, default=str) + "\n")


def check_identity(path: Path, identity: Mapping[str, Any], what: str) -> None:
    """Raise `VlynxError` naming the first field where the recorded identity differs from `identity`."""
    if not path.is_file():
        raise VlynxError(f"these {what} record no run identity (made by an older vlynx?): pass --overwrite to "
                         "start over", path.parent)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VlynxError(f"damaged run identity ({error.msg}): pass --overwrite to start over", path) from error
    current = json.loads(json.dumps(identity, default=str))  # as it would be stored
    difference = first_difference(stored, current)
    if difference is not None:
        raise VlynxError(f"these {what} were made by a different run ({difference}): rerun with the recorded "
                         "settings and inputs, or pass --overwrite to start over", path.parent)


# ----- one writer at a time -----------------------------------------------------------------------
@contextlib.contextmanager
def claim_output(out: str | Path, checkpoints: str | Path, *, resume: bool, overwrite: bool) -> Iterator[bool]:
    """Hold the output's lock and apply the output policy (`prepare_output`) for the block.

    Yields whether earlier checkpoints are to be continued. Under a process group, rank 0
    locks and applies the policy, and every rank learns the outcome (or the error).
    """
    from vlynx.distributed import on_rank_zero, rank

    with output_lock(out) if rank() == 0 else contextlib.nullcontext():
        yield on_rank_zero(lambda: prepare_output(Path(out), Path(checkpoints), resume=resume, overwrite=overwrite))


@contextlib.contextmanager
def output_lock(out: str | Path) -> Iterator[None]:
    """Hold `OUT.lock` for the block; another process holding it means another run writes `out`."""
    path = Path(f"{Path(out)}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise VlynxError(f"another vlynx process is writing this output (it holds {path.name}); wait for it to "
                             "finish or choose another --out", out) from None
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break  # locked the file that is there, not one a finishing run just removed
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()
