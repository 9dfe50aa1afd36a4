"""The demo's numbers summarised over seeds (docs/demo.md, "Statistics"), as a table and as pictures.

Accuracies are fractions in results.json and percent in the table and pictures. Pictures are
drawn with PIL (no plotting dependency): one panel per question category, a horizontal bar per
row with its 95 % interval, and the chance levels as vertical lines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vlynx.demo.experiment import CATEGORIES, ROWS, VLYNX
from vlynx.intervals import mean_interval, paired_difference


def summarise(settings: dict[str, Any], model: str, seeds: list[int], rows: dict[int, dict[str, dict[str, Any]]],
              chance: dict[int, dict[str, dict[str, float]]] | None) -> dict[str, Any]:
    """results.json's body: per row, its per-seed results, mean and interval per category, and the
    paired difference (row - V-LynX) per category; the chance levels averaged over the seeds' worlds."""
    names = [row.name for row in ROWS if row.name in rows[seeds[0]]]
    summary = []
    for name in names:
        per_seed = [{"seed": seed, **rows[seed][name]} for seed in seeds]
        # A seed whose world asked no question of a category has no accuracy there (not 0).
        asked = {c: [seed for seed in seeds if rows[seed][name]["counts"][c]] for c in CATEGORIES}
        series = {c: [rows[seed][name]["accuracy"][c] for seed in asked[c]] for c in CATEGORIES}
        entry = {"name": name, "trainable_params": per_seed[0]["trainable_params"], "per_seed": per_seed,
                 "accuracy": {c: mean_interval(series[c]).as_dict() if series[c] else None for c in CATEGORIES}}
        if name != VLYNX and VLYNX in rows[seeds[0]]:
            baseline = {c: [rows[seed][VLYNX]["accuracy"][c] for seed in asked[c]] for c in CATEGORIES}
            entry["difference_vs_vlynx"] = {c: paired_difference(series[c], baseline[c]).as_dict()
                                            if series[c] else None for c in CATEGORIES}
        summary.append(entry)
    report: dict[str, Any] = {"settings": settings, "model": model, "seeds": seeds, "rows": summary}
    if chance is not None:
        report["chance"] = {c: {level: round(sum(chance[s][c][level] for s in seeds) / len(seeds), 4)
                                for level in ("uniform", "prior")}
                            for c in CATEGORIES if all(c in chance[s] for s in seeds)}
    return report


# ----- table ---------------------------------------------------------------------------------------
def _pm(interval: dict[str, Any] | None) -> str:
    """'53.3 ± 6.4' (percent, half width of the 95 % interval); '–' where no question was asked."""
    if interval is None:
        return "–"
    return f"{100 * interval['mean']:.1f} ± {50 * (interval['high'] - interval['low']):.1f}"


def _range(interval: dict[str, Any] | None) -> str:
    """'-3.0 [-10.2, 4.1]', starred when the interval excludes 0."""
    if interval is None:
        return "–"
    star = " *" if interval["n"] > 1 and (interval["low"] > 0 or interval["high"] < 0) else ""
    return f"{100 * interval['mean']:+.1f} [{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]{star}"


def format_table(report: dict[str, Any]) -> str:
    """The results as markdown: accuracy with intervals, paired differences, chance, and the curve if run."""
    n = len(report["seeds"])
    header = "| " + " | ".join(CATEGORIES) + " |"
    lines = [f"Accuracy in percent, mean ± half width of the 95 % t interval over {n} seeds "
             f"({', '.join(map(str, report['seeds']))}; world and training):", "",
             "| method | trainable params " + header, "|---|---:|" + "---:|" * len(CATEGORIES)]
    for row in report["rows"]:
        lines.append(f"| {row['name']} | {row['trainable_params']:,} | "
                     + " | ".join(_pm(row["accuracy"][c]) for c in CATEGORIES) + " |")
    for level, label in (("uniform", "chance (uniform over the kind's answers)"),
                         ("prior", "answer prior (most frequent training answer)")):
        lines.append(f"| {label} | | " + " | ".join(
            f"{100 * report['chance'][c][level]:.1f}" if c in report["chance"] else "" for c in CATEGORIES) + " |")
    lines += ["", "Paired difference against V-LynX (same seed), percentage points, mean [95 % interval]; "
              "* the interval excludes 0:", "", "| row − V-LynX " + header, "|---|" + "---:|" * len(CATEGORIES)]
    for row in report["rows"]:
        if "difference_vs_vlynx" in row:
            lines.append(f"| {row['name']} | "
                         + " | ".join(_range(row["difference_vs_vlynx"][c]) for c in CATEGORIES) + " |")
    counts = [run["counts"] for run in report["rows"][0]["per_seed"]]
    lines += ["", "Held-out questions per seed: " + "; ".join(
        ", ".join(f"{c[k]} {k}" for k in CATEGORIES) for c in counts) + f". Wall time {report['seconds']:.0f} s."]
    if "curve" in report:
        lines += ["", _curve_table(report["curve"])]
    return "\n".join(lines)


def _curve_table(curve: dict[str, Any]) -> str:
    lines = ["Audio accuracy against the amount of paired scenes (mean ± 95 % half width; "
             "below, paired difference against V-LynX):", "",
             "| method | " + " | ".join(f"{s} scenes" for s in curve["scenes"]) + " |",
             "|---|" + "---:|" * len(curve["scenes"])]
    for row in curve["rows"]:
        lines.append(f"| {row['name']} | " + " | ".join(_pm(p["accuracy"]["audio"]) for p in row["points"]) + " |")
    for row in curve["rows"]:
        if all("difference_vs_vlynx" in p for p in row["points"]):
            lines.append(f"| {row['name']} − V-LynX | "
                         + " | ".join(_range(p["difference_vs_vlynx"]["audio"]) for p in row["points"]) + " |")
    lines += ["", f"The curve's extra tuning runs took {curve['seconds']:.0f} s in all (summed over seeds, "
              "which run side by side)."]
    return "\n".join(lines)


# ----- pictures ------------------------------------------------------------------------------------
COLOURS = [(120, 120, 120), (160, 160, 160), (52, 110, 200), (110, 160, 230), (150, 190, 240), (220, 120, 50),
           (60, 160, 90)]


def plot_results(report: dict[str, Any], path: Path) -> None:
    """One panel per category: a bar per row (mean accuracy) with its 95 % interval, chance lines on top."""
    seeds, settings = report["seeds"], report["settings"]
    title = (f"vlynx demo{' --quick' if settings.get('quick') else ''} on the miniature world "
             f"({settings.get('n_train')} paired scenes, {settings.get('tune_steps')} tuning steps): accuracy on "
             f"held-out questions, mean and 95 % t interval over {len(seeds)} seeds ({seeds[0]}-{seeds[-1]})")
    bars = [(row["name"], {c: row["accuracy"][c] for c in CATEGORIES}) for row in report["rows"]]
    _draw_panels(title, bars, report.get("chance", {}), path)


def plot_curve(report: dict[str, Any], path: Path) -> None:
    """Audio accuracy per amount of paired scenes, one bar per curve row, as `plot_results` draws it."""
    curve, seeds = report["curve"], report["seeds"]
    title = (f"vlynx demo --curve: audio accuracy against paired training scenes, mean and 95 % t interval "
             f"over {len(seeds)} seeds")
    bars = [(row["name"], {f"{p['scenes']} paired scenes": p["accuracy"]["audio"] for p in row["points"]})
            for row in curve["rows"]]
    chance = report.get("chance", {}).get("audio")
    _draw_panels(title, bars, {f"{s} paired scenes": chance for s in curve["scenes"]} if chance else {}, path)


def _colour(name: str) -> tuple[int, int, int]:
    """A row keeps its colour in every picture."""
    names = [row.name for row in ROWS]
    return COLOURS[names.index(name) % len(COLOURS)] if name in names else (0, 0, 0)


def _draw_panels(title: str, bars: list[tuple[str, dict[str, dict[str, Any]]]],
                 chance: dict[str, dict[str, float]], path: Path) -> None:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from vlynx.media.images import write_png

    panels = list(bars[0][1])
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=13)
    label_w, panel_w, gap, bar_h, top = 300, 300, 60, 30, 80
    width = label_w + len(panels) * (panel_w + gap)
    height = top + len(bars) * bar_h + 70
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((12, 10), title, fill="black", font=font)
    draw.text((12, height - 24), "bars: mean; black whiskers: 95 % t interval;  dashed red: chance (uniform over "
              "the question kind's answers);  dotted grey: answer prior (most frequent training answer)",
              fill=(70, 70, 70), font=small)
    bottom = top + len(bars) * bar_h
    for k, (name, _) in enumerate(bars):
        draw.text((12, top + k * bar_h + 7), name, fill="black", font=small)
    for p, panel in enumerate(panels):
        x0 = label_w + p * (panel_w + gap)

        def x(value: float, x0: float = x0) -> float:
            return x0 + panel_w * min(max(value, 0.0), 1.0)

        draw.text((x0, top - 40), f"{panel} questions" if panel in CATEGORIES else panel, fill="black", font=font)
        for tick in range(0, 101, 25):
            draw.line([(x(tick / 100), top - 4), (x(tick / 100), bottom)], fill=(225, 225, 225))
            draw.text((x(tick / 100) - 10, bottom + 4), f"{tick}%", fill="black", font=small)
        for k, (_, values) in enumerate(bars):
            interval, y = values[panel], top + k * bar_h
            if interval is None:
                continue
            draw.rectangle([x0, y + 5, x(interval["mean"]), y + bar_h - 5], fill=_colour(bars[k][0]))
            mid = y + bar_h / 2
            draw.line([(x(interval["low"]), mid), (x(interval["high"]), mid)], fill="black", width=2)
            for end in (interval["low"], interval["high"]):
                draw.line([(x(end), mid - 6), (x(end), mid + 6)], fill="black", width=2)
        levels = chance.get(panel) or {}
        for level, colour, dash in (("uniform", (210, 40, 40), 6), ("prior", (110, 110, 110), 2)):
            if level in levels:
                for y in range(top - 4, bottom, 2 * dash):
                    draw.line([(x(levels[level]), y), (x(levels[level]), min(y + dash, bottom))], fill=colour, width=2)
        draw.line([(x0, top - 4), (x0, bottom)], fill="black")
    write_png(path, np.asarray(image))
