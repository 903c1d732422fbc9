"""A mistyped task or flag is one line naming the nearest one and where the list is (invoke's own
"No idea what '--x' is!" alone says neither); `logs -f` points at --follow."""

from __future__ import annotations

import pytest
from testkit import invoke


@pytest.mark.parametrize("args, line", [
    (["biuld"], "error: no task 'biuld': did you mean build? (`invoke --list` lists them)"),
    (["registry.stauts"], "error: no task 'registry.stauts': did you mean registry.status? (`invoke --list` lists them)"),
    (["--help", "deplyo"], "error: no task 'deplyo': did you mean deploy? (`invoke --list` lists them)"),
    (["status", "--jsn"], "error: status has no flag --jsn: did you mean --json? "
                          "(`invoke --help status` lists its flags, `invoke --list` the tasks)"),
    (["logs", "--folow"], "error: logs has no flag --folow: did you mean --follow? "
                          "(`invoke --help logs` lists its flags, `invoke --list` the tasks)"),
    (["--lsit"], "error: invoke has no flag --lsit: did you mean --list? (`invoke --help` lists them, `invoke --list` the tasks)"),
    (["xyzzy"], "error: no task 'xyzzy' (`invoke --list` lists them)"),
    (["logs", "-f"], "error: -f is invoke's own --config flag; follow a workload's output with `invoke logs --follow`"),
])
def test_a_mistyped_task_or_flag_names_the_nearest_and_the_list(args, line, env):
    done = invoke(*args, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [line]


@pytest.mark.parametrize("args", [["run", "--help"], ["pull", "-h"], ["login", "--help"]])
def test_help_after_a_task_with_required_arguments_is_that_tasks_help(args, env):
    """Invoke itself would take `--help` as the task's first argument and then miss the next one."""
    done = invoke(*args, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: inv[oke] [--core-opts] {args[0]} ") and done.stderr == ""


@pytest.mark.parametrize("output", ["a-file", "/proc/fractalify-out", "a-file/below"])
def test_an_output_directory_that_cannot_be_made_is_one_line_and_nothing_is_left(output, env, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    before = sorted(tmp_path.rglob("*"))
    done = invoke("run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / output), "--once", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and ("is a file, not a directory" in line or "cannot create the output directory" in line)
    assert sorted(tmp_path.rglob("*")) == before


def test_a_missing_input_directory_is_said_before_the_output_directory_is_made(env, tmp_path):
    done = invoke("run", "--input", str(tmp_path / "absent"), "--output", str(tmp_path / "out"), "--once", env=env)
    assert done.returncode == 1 and done.stderr.splitlines() == [f"error: {tmp_path / 'absent'} is not a directory: "
                                                                 "create it or pass an existing one"]
    assert not (tmp_path / "out").exists()
