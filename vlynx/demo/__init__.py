"""The end-to-end demo on the miniature world, as an experiment: does interface alignment help?

Every row of the table (docs/demo.md) runs on `config.seeds` worlds (world and training seeded
alike); `--curve` adds the paired-data curve. Results go to `results.json` (per seed, mean and
95 % interval per row and category, paired differences against V-LynX, chance levels), a
markdown table (`results.md`) and a chart with error bars (`results.png`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vlynx.demo.experiment import CATEGORIES, CONTROL, CURVE_ROWS, MODEL, ROWS, VLYNX, run_curve_point, run_seed
from vlynx.demo.report import format_table, plot_curve, plot_results, summarise
from vlynx.files import write_text_atomic
from vlynx.outputs import claim_output, save_run
from vlynx.progress import log
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
    runs = {}
    for seed in seeds:
        runs[seed] = run_seed(config.updated({"seed": seed}), out / f"seed-{seed}")
        # Rewritten after every seed, so a long run stopped early still shows the seeds it finished.
        report = summarise(config.to_dict(), MODEL, list(runs), {s: r["rows"] for s, r in runs.items()},
                           {s: r["chance"] for s, r in runs.items()})
        report["seconds"] = round(time.time() - started, 1)
        _write(report, out)
    if config.curve:
        began = time.time()
        points = {}
        for seed in seeds:
            seed_config = config.updated({"seed": seed})
            points[seed] = {scenes: run_curve_point(seed_config, out / f"seed-{seed}", runs[seed], scenes)
                            for scenes in config.curve_scenes if scenes < config.n_train}
            points[seed][config.n_train] = {name: runs[seed]["rows"][name] for name in CURVE_ROWS}
        report["curve"] = _curve(points, seeds)
        report["curve"]["seconds"] = round(time.time() - began, 1)
        _write(report, out)
    log.info("demo done in %.0f s", time.time() - started)
    return report


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
