"""The core's command line: one line and exit status 2 for a bad option or a missing directory;
the version banner and the log format."""

from __future__ import annotations

import pytest

from coretools import noise, run_module, save


@pytest.mark.parametrize("flags, words", [
    (("--bogus",), "unknown option --bogus"),
    (("--max-iter", "0"), "--max-iter"),
    (("--max-iter", "256"), "--max-iter"),
    (("--channel", "alpha"), "--channel"),
    (("--c", "1"), "--c"),
    (("--interval", "-1"), "--interval"),
    (("--max-pixels", "lots"), "--max-pixels"),
])
def test_a_bad_option_is_one_line_and_status_2(module, tmp_path, flags, words):
    (tmp_path / "in").mkdir()
    done = run_module(module, tmp_path / "in", tmp_path / "out", *flags)
    assert done.status == 2
    assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr


def test_a_bad_variable_names_the_variable(module, tmp_path):
    (tmp_path / "in").mkdir()
    done = run_module(module, tmp_path / "in", tmp_path / "out", env={"FRACTALIFY_MAX_ITER": "zero"})
    assert done.status == 2 and "FRACTALIFY_MAX_ITER" in done.stderr


def test_a_missing_directory_is_one_line_and_status_2(module, tmp_path):
    (tmp_path / "in").mkdir()
    done = run_module(module, tmp_path / "in", tmp_path / "out",
                      argv=("fractalify", "--once", "/input_dir", "/nowhere"))
    assert done.status == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "/nowhere" in done.stderr


def test_the_log_is_a_banner_then_one_wrote_line_per_image(module, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "a.png")
    save(noise(8, 8, 3), tmp_path / "in" / "b" / "c.bmp")
    done = run_module(module, tmp_path / "in", tmp_path / "out")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fractalify 0.2.0")
    wrote = [line for line in lines if line.startswith("wrote ")]
    assert sorted(done.wrote()) == ["a.png", "b/c.bmp"] and len(wrote) == 2
    for line in wrote:
        assert line.endswith(" ms)") and " bytes, " in line
    assert not any(line.startswith("wrote ") for line in lines if line not in wrote)
