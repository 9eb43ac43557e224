"""``nasd example``: the shipped example experiments, listed and printed (issue 10, first hour).

A new user who installed nasd from a wheel has no ``examples/`` folder; ``nasd example digits >
digits.toml`` must give them the same file a checkout has, and an unknown name must say so in one
line with exit status 2.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nasd.cli import ops
from nasd.config.experiment import load_experiment
from nasd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _nasd(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m nasd.cli ARGV`` in the checkout, as a user's shell would run ``nasd``."""
    return subprocess.run(
        [sys.executable, "-m", "nasd.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_examples_come_from_the_one_copy_in_the_source_tree() -> None:
    assert ops.examples_dir() == EXAMPLES
    assert set(ops.examples()) == {path.stem for path in EXAMPLES.glob("*.toml")}
    assert "digits" in ops.examples()


def test_each_listed_example_has_a_one_line_summary_from_its_opening_comment() -> None:
    listed = ops.examples()
    assert listed["digits"] == (
        "A one-minute search: small CNNs on scikit-learn's 8x8 digits (1,797 images, 10 classes)."
    )
    for summary in listed.values():
        assert summary and "#" not in summary and "\n" not in summary
        assert len(summary) <= ops.SUMMARY_MAX_CHARS


def test_a_summary_joins_comment_lines_up_to_the_first_sentence() -> None:
    text = "# Two lines (v1.2) make\n#   one sentence. Not this.\n[experiment]\n# nor this\n"
    assert ops._summary(text) == "Two lines (v1.2) make one sentence."
    assert ops._summary("[experiment]\n") == ""
    long = "# " + "word " * 40 + "\n"
    assert ops._summary(long).endswith("word...")
    assert len(ops._summary(long)) <= ops.SUMMARY_MAX_CHARS


def test_example_text_is_the_file_and_accepts_the_toml_suffix() -> None:
    expected = (EXAMPLES / "digits.toml").read_text(encoding="utf-8")
    assert ops.example_text("digits") == expected
    assert ops.example_text("digits.toml") == expected


@pytest.mark.parametrize("name", ["nope", "../pyproject", "", "digits/../mnist1d"])
def test_an_unknown_or_path_like_name_is_refused_naming_the_examples(name: str) -> None:
    with pytest.raises(ConfigError, match=r"no example named .*digits, mnist1d"):
        ops.example_text(name)


def test_cmd_example_lists_one_line_per_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert ops.cmd_example(argparse.Namespace(name=None)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == sorted(ops.examples())


def test_cmd_example_prints_the_file_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert ops.cmd_example(argparse.Namespace(name="mnist1d")) == 0
    assert capsys.readouterr().out == (EXAMPLES / "mnist1d.toml").read_text(encoding="utf-8")


def test_nasd_example_digits_writes_a_file_nasd_accepts(tmp_path: Path) -> None:
    done = _nasd("example", "digits")
    assert done.returncode == 0, done.stderr
    written = tmp_path / "digits.toml"
    written.write_text(done.stdout, encoding="utf-8")
    assert tomllib.loads(done.stdout)["experiment"]["name"] == "digits-cnn"
    assert load_experiment(written).name == "digits-cnn"


def test_nasd_example_without_a_name_lists_them() -> None:
    done = _nasd("example")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == sorted(path.stem for path in EXAMPLES.glob("*.toml"))


def test_nasd_example_with_an_unknown_name_is_one_line_and_exit_2() -> None:
    done = _nasd("example", "nope")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("nasd example: error: no example named 'nope'")


def test_the_wheel_ships_the_examples_as_data_files() -> None:
    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["data-files"]
    assert data_files["share/nasd/examples"] == ["examples/*.toml"]


def test_an_installed_package_finds_the_examples_under_sys_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lay out what a wheel install leaves: nasd/cli/ops.py under site-packages (no examples/
    # beside it) and the data files under <prefix>/share/nasd/examples.
    site = tmp_path / "lib" / "python3" / "site-packages" / "nasd" / "cli"
    site.mkdir(parents=True)
    shared = tmp_path / "share" / "nasd" / "examples"
    shared.mkdir(parents=True)
    (shared / "digits.toml").write_text("# Shipped.\n[experiment]\n", encoding="utf-8")
    monkeypatch.setattr(ops, "__file__", str(site / "ops.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert ops.examples_dir() == shared
    assert ops.examples() == {"digits": "Shipped."}
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="example experiments not found"):
        ops.examples_dir()


def test_the_readme_stands_alone_and_agrees_with_the_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared/" not in readme
    assert "DESIGN.md" not in readme
    assert "nasd example digits > digits.toml" in readme
    assert "four to five minutes on a 2-core CPU" in readme
