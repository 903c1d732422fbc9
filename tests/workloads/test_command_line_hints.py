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
