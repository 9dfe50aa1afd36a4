"""`vlynx preview` and `vlynx modalities`: the sheet shows what the encoder gets; bad input is one line."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile
from PIL import Image

from vlynx import cli
from vlynx.errors import VlynxError
from vlynx.media.video import write_video


@pytest.fixture(autouse=True)
def only_these_commands(monkeypatch):
    # Other subcommands are developed in parallel; this file tests its own two.
    monkeypatch.setattr(cli, "COMMANDS", ("vlynx.commands.modalities", "vlynx.commands.preview"))


COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], dtype=np.uint8)


def test_modalities_lists_builtins(capsys):
    assert cli.main(["modalities"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["audio", "depth", "egocentric", "hfr"]
    assert all(len(line.split(None, 1)) == 2 for line in lines)  # every name has a description


def test_preview_sheet_is_the_encoder_input(tmp_path):
    video = tmp_path / "fast.mp4"
    write_video(video, np.broadcast_to(COLOURS[:, None, None, :], (4, 32, 32, 3)).copy(), fps=4)
    out = tmp_path / "sheets" / "hfr.png"
    assert cli.main(["preview", "--modality", "hfr", str(video), "--out", str(out), "--frames", "1",
                     "--model", "tiny"]) == 0
    sheet = np.asarray(Image.open(out).convert("RGB"))
    # One 32 x 32 frame (the tiny encoder's size) with a 2-pixel white border.
    assert sheet.shape == (36, 36, 3)
    assert np.all(sheet[:2] == 255) and np.all(sheet[:, :2] == 255)
    frame = sheet[2:34, 2:34].astype(int)
    for k, (rows, cols) in enumerate([(slice(0, 16), slice(0, 16)), (slice(0, 16), slice(16, 32)),
                                      (slice(16, 32), slice(0, 16)), (slice(16, 32), slice(16, 32))]):
        inner = frame[rows, cols][2:-2, 2:-2]  # bicubic resize blurs tile borders by a pixel or two
        assert np.abs(inner - COLOURS[k]).max() <= 12, k
    assert [p.name for p in out.parent.iterdir()] == ["hfr.png"]  # no temporary file left


def test_preview_resizes_to_encoder_and_passes_settings(tmp_path):
    audio = tmp_path / "tone.wav"
    t = np.arange(32_000) / 16_000
    soundfile.write(audio, (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 16_000)
    raw = tmp_path / "raw.png"
    assert cli.main(["preview", "-m", "audio", str(audio), "-o", str(raw), "-n", "3", "--raw",
                     "--set", "n_mels=16", "--set", "time_steps=40", "--set", "window_s=0.5"]) == 0
    # 3 frames of 16 x 40 in a 2-column sheet: 2 rows.
    assert np.asarray(Image.open(raw)).shape == (2 * 16 + 3 * 2, 2 * 40 + 3 * 2, 3)
    encoder = tmp_path / "encoder.png"
    assert cli.main(["preview", "-m", "audio", str(audio), "-o", str(encoder), "-n", "1", "--model", "tiny"]) == 0
    assert np.asarray(Image.open(encoder)).shape == (36, 36, 3)


def make_bad_inputs(tmp_path):
    silent_video = tmp_path / "no_audio.mp4"
    write_video(silent_video, np.zeros((4, 16, 16, 3), np.uint8), fps=4)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    zeros = tmp_path / "zeros"
    zeros.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(zeros / "0.png")
    return [
        ("audio", tmp_path / "missing.wav", "missing.wav: file not found"),
        ("audio", tmp_path / "empty.wav", "empty.wav: file is empty"),
        ("audio", silent_video, "no_audio.mp4: video has no audio track"),
        ("hfr", tmp_path / "corrupt.mp4", "corrupt.mp4: cannot decode video"),
        ("depth", zeros, "0.png: depth map has no valid pixels (all zeros)"),
    ]


def test_bad_inputs_one_line_exit_2(tmp_path, capsys):
    for modality, path, message in make_bad_inputs(tmp_path):
        code = cli.main(["preview", "-m", modality, str(path), "-o", str(tmp_path / "x.png"), "--raw"])
        err = capsys.readouterr().err
        assert code == 2, (modality, path)
        assert err.count("\n") == 1 and err.startswith("vlynx preview: error: ") and message in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "x.png").exists()
    with pytest.raises(VlynxError, match="no_audio.mp4: video has no audio track"):
        cli.main(["preview", "-m", "audio", str(tmp_path / "no_audio.mp4"), "-o", str(tmp_path / "x.png"),
                  "--raw", "--debug"])


def test_bad_settings_and_names(tmp_path, capsys):
    assert cli.main(["preview", "-m", "sonar", "x", "-o", str(tmp_path / "x.png")]) == 2
    assert "unknown modality 'sonar'" in capsys.readouterr().err
    assert cli.main(["preview", "-m", "audio", "x", "-o", str(tmp_path / "x.png"), "--set", "nmels"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
