"""`invoke logs --follow/--tail/--json` and `invoke status --json`, with the real module on the
local node and a docker-registry of the test's own."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
from testkit import INVOKE, ROOT, invoke, wait_for
from workload_kit import images, one_line_error


@pytest.fixture
def deployed(registry, env, tmp_path, workload_names) -> str:
    """The module pushed and deployed with a short interval, two images written; its name."""
    done = invoke("build", "push", "--registry", registry.address, env=env)
    assert done.returncode == 0, done.stderr
    name = workload_names("logs")
    images(tmp_path / "in", 2)
    done = invoke("deploy", "--registry", registry.address, "--name", name, "--input-dir", str(tmp_path / "in"),
                  "--output-dir", str(tmp_path / "out"), "--env", "FRACTALIFY_INTERVAL=0.2", env=env)
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: invoke("logs", "--name", name, env=env).stdout.count("wrote ") == 2, 60)
    return name


def test_logs_follow_prints_new_lines_as_they_come_and_ends_at_undeploy(deployed, env, tmp_path):
    follower = subprocess.Popen([str(INVOKE), "logs", "--name", deployed, "--follow"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in follower.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: sum("wrote " in line for line in lines) == 2, 30), lines  # what was there
        images(tmp_path / "in", 1, start=5)
        assert wait_for(lambda: any(line.startswith("[instance-0] wrote img05.png") for line in lines), 60), lines
        assert invoke("undeploy", "--name", deployed, env=env).returncode == 0
        assert follower.wait(timeout=30) == 0  # the workload is gone: nothing more to follow
    finally:
        follower.kill()
    assert "Traceback" not in follower.stderr.read()


def test_logs_tail_gives_the_last_lines_of_each_stream_and_json_one_object_a_line(deployed, env):
    every = invoke("logs", "--name", deployed, env=env).stdout.splitlines()
    tailed = invoke("logs", "--name", deployed, "--tail", "1", env=env).stdout.splitlines()
    assert tailed == [every[-1]] and "wrote " in tailed[0]  # stdout's last line; stderr is empty
    assert invoke("logs", "--name", deployed, "--tail", "0", env=env).stdout == ""
    objects = [json.loads(line) for line in invoke("logs", "--name", deployed, "--json", env=env).stdout.splitlines()]
    assert [(o["instance"], o["stream"]) for o in objects] == [(0, "stdout")] * len(every)
    assert [f"[instance-0] {o['line']}" for o in objects] == every
    one_line_error(invoke("logs", "--name", deployed, "--tail", "many", env=env), "--tail")


def test_status_json_gives_each_instance_state_restarts_and_exit(deployed, env):
    workloads = json.loads(invoke("status", "--json", env=env).stdout)
    ours = next(w for w in workloads if w.get("name") == deployed)
    assert (ours["namespace"], ours["kind"], ours["phase"], ours["runner_lost"]) == ("default", "Pod", "Running", False)
    assert ours["instances"] == [{"index": 0, "state": "Running", "started": True, "exit_code": None, "restarts": 0,
                                  "last_error": ""}]
