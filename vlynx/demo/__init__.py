"""The end-to-end demo on the miniature world, as an experiment: does interface alignment help?

Every row of the table (docs/demo.md) runs on `config.seeds` worlds (world and training seeded
alike); `--curve` adds the paired-data curve. Results go to `results.json` (per seed, mean and
95 % interval per row and category, paired differences against V-LynX, chance levels), a
markdown table (`results.md`) and a chart with error bars (`results.png`).
"""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from vlynx.demo.experiment import CATEGORIES, CONTROL, CURVE_ROWS, MODEL, ROWS, VLYNX, quiet_worker, run_seed_and_curve
from vlynx.demo.report import format_table, plot_curve, plot_results, summarise
from vlynx.files import write_text_atomic
from vlynx.outputs import claim_output, save_run
from vlynx.progress import log, progress
from vlynx.stage_configs import DemoConfig

__all__ = ["CATEGORIES", "CONTROL", "CURVE_ROWS", "ROWS", "VLYNX", "format_table", "run_demo"]


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the whole demo into `config.out`; returns what `results.json` holds."""
    started = time.time()
    config = config.resolved()
    config.check()
    out = Path(config.out)
    with claim_output(out, out, resume=False, overwrite=config.overwrite):
        out.mkdir(parents=True, exist_ok=True)
        report = _run(config, out)
        save_run(config, out, started)  # the record holds the wall time
    return report


def _run(config: DemoConfig, out: Path) -> dict[str, Any]:
    started = time.time()
    seeds = list(range(config.seed, config.seed + config.seeds))
    runs: dict[int, dict[str, Any]] = {}
    for seed, run in _each_seed(config, out, seeds):
        runs[seed] = run
        # Rewritten as each seed finishes, so a long run stopped early still shows the seeds it finished.
        done = sorted(runs)
        report = summarise(config.to_dict(), MODEL, done, {s: runs[s]["rows"] for s in done},
                           {s: runs[s]["chance"] for s in done})
        report["seconds"] = round(time.time() - started, 1)
        if config.curve:
            report["curve"] = _curve({s: runs[s]["curve"] for s in done}, done)
            report["curve"]["seconds"] = round(sum(runs[s]["curve_seconds"] for s in done), 1)
        _write(report, out)
    log.info("demo done in %.0f s", time.time() - started)
    return report


def _each_seed(config: DemoConfig, out: Path, seeds: list[int]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(seed, its rows and curve) as each seed finishes; `config.jobs` seeds at once, each in its own process.

    Every seed runs on one CPU thread wherever it runs, so its numbers do not depend on `jobs`.
    """
    # More single-threaded seeds than cores share them, so no core idles while the last seed runs alone.
    jobs = min(config.jobs or 2 * (os.cpu_count() or 1), len(seeds))
    seed_configs = {seed: config.updated({"seed": seed}) for seed in seeds}
    if jobs == 1:
        for seed in seeds:
            yield seed, run_seed_and_curve(seed_configs[seed], out / f"seed-{seed}")
        return
    log.info("running %d seeds, %d at a time (one process each; stage lines name their seed)", len(seeds), jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch state
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=quiet_worker,
                             initargs=(log.getEffectiveLevel(),)) as pool:
        futures = {pool.submit(run_seed_and_curve, seed_configs[seed], out / f"seed-{seed}"): seed for seed in seeds}
        try:
            for future in progress(as_completed(futures), desc="seeds", total=len(futures), unit="seed"):
                yield futures[future], future.result()
        except BaseException:  # a failed seed (or Ctrl-C) stops the seeds not yet started
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _curve(points: dict[int, dict[int, dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """Per amount of paired scenes, the curve rows summarised over seeds like the main table."""
    amounts = sorted(points[seeds[0]])
    summaries = {scenes: summarise({}, MODEL, seeds, {s: points[s][scenes] for s in seeds}, None)["rows"]
                 for scenes in amounts}
    return {"scenes": amounts,
            "rows": [{"name": name, "points": [{"scenes": scenes, **next(r for r in summaries[scenes]
                                                                         if r["name"] == name)}
                                               for scenes in amounts]} for name in CURVE_ROWS]}


def _write(report: dict[str, Any], out: Path) -> None:
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "results.md", format_table(report) + "\n")
    plot_results(report, out / "results.png")
    if "curve" in report:
        plot_curve(report, out / "curve.png")
