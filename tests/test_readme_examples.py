"""The README's "Python API" examples, read from README.md and run as written on the shipped model."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest

from vlynx.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def fenced_blocks(section: str, language: str) -> list[str]:
    """The ```language blocks of README section `## section`, in order."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", body, flags=re.MULTILINE | re.DOTALL)


def stated_answer(line: str) -> str:
    """The answer a README line promises in its trailing comment (`...  # red`)."""
    return line.rsplit("#", 1)[1].strip()


def ground_truth(folder: Path, video: str, question: str) -> str:
    """The scene's answer to `question`, from the annotations `vlynx miniworld generate` wrote beside it."""
    entries = json.loads((folder / "annotations.json").read_text())
    answers = [e["conversations"][1]["value"] for e in entries
               if (folder / e["video"]).resolve() == Path(video).resolve()
               and e["conversations"][0]["value"].replace("<image>\n", "") == question]
    assert len(answers) == 1, f"no single annotation for {question!r} about {video}"
    return answers[0]


@pytest.fixture
def readme_commands(tmp_path, monkeypatch, capsys):
    """Run the README's shell example in `tmp_path`; returns (answer command's argv, printed answer)."""
    monkeypatch.chdir(tmp_path)
    (block,) = fenced_blocks("Python API", "bash")[:1]
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [c[:2] for c in commands] == [["vlynx", "miniworld"], ["vlynx", "answer"]]
    for argv in commands:
        capsys.readouterr()
        assert main(["-q", *argv[1:]]) == 0, argv
    return block.splitlines()[-1], capsys.readouterr().out


def test_readme_cli_example_answers_the_scene_correctly(readme_commands, tmp_path):
    line, printed = readme_commands
    argv = shlex.split(line, comments=True)
    video, question = argv[argv.index("--video") + 1], argv[-1]
    truth = ground_truth(Path(video).parent.parent, video, question)
    assert printed.strip() == truth == stated_answer(line)


def test_readme_python_example_answers_the_scene_correctly(readme_commands, tmp_path):
    (code,) = fenced_blocks("Python API", "python")[:1]
    answer_line = next(line for line in code.splitlines() if "answer(" in line and not line.startswith("#"))
    video = re.search(r'video="([^"]+)"', answer_line).group(1)
    question = re.search(r'question="([^"]+)"', answer_line).group(1)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    truth = ground_truth(Path(video).parent.parent, video, question)
    assert printed.getvalue().strip() == truth == stated_answer(answer_line)


def test_readme_cli_example_answers_in_bfloat16(readme_commands, tmp_path, capsys):
    line, _ = readme_commands
    argv = shlex.split(line, comments=True)
    assert main(["-q", *argv[1:], "--dtype", "bfloat16"]) == 0
    printed = capsys.readouterr().out
    video, question = argv[argv.index("--video") + 1], argv[-1]
    assert printed.strip() == ground_truth(Path(video).parent.parent, video, question)
