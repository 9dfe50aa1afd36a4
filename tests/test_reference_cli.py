"""`vlynx reference` on the command line: compute, report, and one-line errors."""
from __future__ import annotations

from tests.test_reference import FRAMES, write_videos
from vlynx.cli import main
from vlynx.reference import load_reference, stability_report


def test_compute_then_report(tiny_checkpoint, tmp_path, capsys):
    write_videos(tmp_path / "one", 2, seed=11)
    write_videos(tmp_path / "two", 2, seed=12)
    listing = tmp_path / "two.txt"
    listing.write_text("# the second source as a list file\ntwo/video0.mp4\ntwo/video1.mp4\n")
    out = tmp_path / "ref.safetensors"
    code = main(["-q", "reference", "--model", str(tiny_checkpoint), "--videos", str(tmp_path / "one"),
                 "--videos", str(listing), "--frames", str(FRAMES), "--out", str(out), "--workers", "1",
                 "--device", "cpu"])
    assert code == 0
    assert f"{out}: 4 videos, {4 * FRAMES} frames" in capsys.readouterr().out
    reference = load_reference(out)
    assert list(reference.sources) == ["one", "two"]  # default names: the folder and the list file
    assert not (tmp_path / "ref.safetensors.partial").exists()

    assert main(["reference", "--report", str(out)]) == 0
    report = capsys.readouterr().out.splitlines()
    layer_one = stability_report(reference)[0]
    cells = report[report.index(next(l for l in report if l.lstrip().startswith("layer"))) + 1].split()
    assert cells[0] == "1" and float(cells[2]) == round(layer_one.key_magnitude, 3)
    assert float(cells[3]) == round(layer_one.key_variance, 6)


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["reference", "--model", "tiny", "--frames", "2"]) == 2
    assert "missing --videos, --out" in capsys.readouterr().err
    write_videos(tmp_path, 1, seed=3)
    assert main(["reference", "--report", str(tmp_path / "video0.mp4")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("vlynx reference: error:") and "video0.mp4" in error and "\n" not in error
