"""The command line: help text, module entry point, one-line errors."""
from __future__ import annotations

import subprocess
import sys

from vlynx.cli import COMMANDS, build_parser, main, parse_args


def test_every_command_has_help_text(capsys):
    parser = build_parser()
    names = [module.rsplit(".", 1)[1] for module in COMMANDS]
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name in names:
        assert name in subparsers.choices
        assert subparsers.choices[name].description, f"`vlynx {name}` has no description"


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "vlynx", "--help"], capture_output=True, text=True, check=True)
    assert "params" in result.stdout


def test_user_errors_are_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    missing = str(tmp_path / "no" / "such" / "model")
    assert main(["params", "--model", missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model directory" in err and missing in err
    try:
        main(["params", "--model", missing, "--debug"])
    except Exception as error:  # --debug re-raises so the traceback is shown
        assert "no such model directory" in str(error)
    else:
        raise AssertionError("--debug should re-raise")


def test_global_flags_work_before_and_after_the_subcommand():
    before = parse_args(["-q", "--debug", "params", "--model", "tiny"])
    after = parse_args(["params", "--model", "tiny", "-q"])
    neither = parse_args(["params", "--model", "tiny"])
    assert (before.quiet, before.debug) == (True, True)
    assert (after.quiet, after.debug) == (True, False)
    assert (neither.quiet, neither.debug) == (False, False)


def test_help_imports_neither_torch_nor_transformers():
    """`vlynx --help` stays fast: building every subcommand's parser loads no heavy library."""
    import subprocess
    import sys

    code = ("import sys; from vlynx.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'av') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
