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


def test_preview_states_which_audio_frames_are_padded_with_silence(tmp_path, caplog):
    audio = tmp_path / "two_seconds.wav"
    soundfile.write(audio, np.full(32_000, 0.1, np.float32), 16_000)
    with caplog.at_level("INFO", logger="vlynx"):
        assert cli.main(["preview", "-m", "audio", str(audio), "-o", str(tmp_path / "a.png"), "-n", "4", "--raw"]) == 0
    # 2 s windows centred at 0.25, 0.75, 1.25, 1.75 s over a 0..2 s recording: 0.75, 0.25, 0.25, 0.75 s outside.
    assert ("two_seconds.wav: padding in 4 of 4 frames (window outside the recording, drawn as silence): "
            "frame 0 37.5%, frame 1 12.5%, frame 2 12.5%, frame 3 37.5%") in caplog.text
    from PIL import Image

    sheet = np.asarray(Image.open(tmp_path / "a.png"))
    tile = 2 * 2 + 2 * 128  # 4 mel images of 128 rows (n_mels) in 2 rows of the sheet, with 2 px gaps
    assert sheet.shape[0] > tile + 2  # a caption strip below the frames
    caption = sheet[tile + 2:]
    assert ((caption[..., 0] > 150) & (caption[..., 1] < 60)).any()  # red text where a person looks
    caplog.clear()
    video = tmp_path / "video.mp4"
    write_video(video, np.zeros((8, 32, 32, 3), np.uint8), fps=4)
    with caplog.at_level("INFO", logger="vlynx"):
        assert cli.main(["preview", "-m", "hfr", str(video), "-o", str(tmp_path / "v.png"), "-n", "1", "--raw"]) == 0
    assert "wrote" in caplog.text and "padding" not in caplog.text


def truncated_fast_start_mp4(tmp_path):
    """16 frames at 4 fps with the moov atom (and its 4 s) first, cut after the data of frame 10."""
    import av

    complete = tmp_path / "complete.mp4"
    with av.open(str(complete), "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=4)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.options = {"x264-params": "bframes=0"}
        for level in range(16):
            image = np.full((32, 32, 3), 15 * level, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(complete)) as container:
        offsets = [packet.pos for packet in container.demux(video=0) if packet.size]
    path = tmp_path / "trunc.mp4"
    path.write_bytes(complete.read_bytes()[:offsets[11]])
    return path


def test_truncated_fast_start_video_is_refused_with_its_path(tmp_path, capsys):
    path = truncated_fast_start_mp4(tmp_path)
    audio = tmp_path / "tone.wav"
    soundfile.write(audio, np.full(64_000, 0.1, np.float32), 16_000)
    for argv in (["-m", "hfr", str(path)], ["-m", "egocentric", str(path), "-n", "4"],
                 ["-m", "audio", str(audio), "--align-to", str(path)]):
        code = cli.main(["preview", *argv, "-o", str(tmp_path / "x.png"), "--raw"])
        err = capsys.readouterr().err
        assert code == 2, argv
        assert err.startswith("vlynx preview: error: ") and err.count("\n") == 1, err
        assert "trunc.mp4: video ends early: the header says 4.00 s (16 frames) but the file holds only 11" in err
    assert not (tmp_path / "x.png").exists()
