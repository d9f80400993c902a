"""The CLI surface: every stage command is listed and shows an example; user errors are one line."""

import subprocess
import sys

import pytest

COMMANDS = [
    "synth",
    "prep",
    "validate",
    "folds",
    "folds make",
    "folds import",
    "folds export",
    "feats",
    "augment",
    "train",
    "eval",
    "score",
    "compare",
    "analyze",
    "package",
    "infer",
    "export",
]


def sertk(*args, env=None, cwd=None):
    code = "import sys; from sertk.cli import main; sys.argv = ['sertk'] + sys.argv[1:]; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_help_lists_every_stage_command():
    out = sertk("--help")
    assert out.returncode == 0
    for command in COMMANDS:
        assert command.split()[0] in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_has_an_example(command):
    out = sertk(*command.split(), "--help")
    assert out.returncode == 0, out.stderr
    assert f"sertk {command.split()[0]}" in out.stdout
    if command != "folds":  # the group lists its commands, which carry the examples
        assert "Example" in out.stdout


def test_user_error_is_one_line_without_traceback(tmp_path):
    out = sertk("validate", str(tmp_path / "nope"))
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {tmp_path / 'nope'}: data dir not found"]


def test_prep_without_root_or_env_explains(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "IEMOCAP"}
    out = sertk("prep", env=env, cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "set IEMOCAP=" in out.stderr
