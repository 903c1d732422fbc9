"""`invoke dev`, end to end: the real `invoke dev` process in a PoC made by `invoke new`, real
cargo, the local node's wasmtime, and a docker-registry started here on a free port. The test
edits the PoC's files as an editor would and sends SIGINT as Ctrl-C does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from testkit import INVOKE, ROOT, clean_env, invoke, wait_for

from registries import make_registry
from wasmpod.local_node import LocalNode



class DevProcess:
    """`invoke dev ARGS` in `cwd`, its output lines collected as they come."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        # SIGINT as a terminal's foreground process has it (a shell's background job ignores it).
        self.process = subprocess.Popen([str(INVOKE), "dev", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def saw(self, text: str, after: int = 0) -> bool:
        return any(text in line for line in self.lines[after:])

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        status = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return status

    def output(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(scope="module")
def poc(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("dev") / "thumbs"
    done = invoke("new", "thumbs", "--dest", str(dest))
    assert done.returncode == 0, done.stderr
    os.symlink(ROOT / ".venv", dest / ".venv")
    return dest


@pytest.fixture
def dev_env(poc, tmp_path):
    """A registry of the test's own as the 'local' one, and a workload name of the test's own."""
    registry = make_registry(tmp_path / "registry").start()
    name = f"thumbs-dev-{os.getpid()}"
    env = {**clean_env(docker_config=tmp_path / "docker"), "INVOKE_REGISTRY_LOCAL_PORT": registry.address.split(":")[1],
           "INVOKE_DEPLOY_NAME": name,
           # A release's signing and verification settings: dev neither signs nor verifies its saves.
           "INVOKE_REGISTRY_SIGN_KEY": str(tmp_path / "absent.key"), "INVOKE_DEPLOY_VERIFY_KEY": str(tmp_path / "absent.pub")}
    yield env, name
    invoke("undeploy", "--name", name, env=env, cwd=poc, timeout=60)
    registry.stop()


def node_of(poc: Path) -> Path:
    """Where the PoC's own local node keeps its default namespace's workloads (a PoC is standalone)."""
    return poc / ".cache" / "node" / "default"


def text_of(path: Path) -> str:
    """The file's text; empty while it is not there (--fresh removes outputs before the new module writes them)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def save_by_rename(path: Path, text: str) -> None:
    (path.parent / f"{path.name}.new").write_text(text)
    os.replace(path.parent / f"{path.name}.new", path)


LIB = Path("src/thumbs/src/lib.rs")
SUMMARY_LINE = 'format!("bytes: {}\\nlines'


def test_a_saved_change_is_built_pushed_redeployed_and_shown_and_ctrl_c_undeploys(poc, dev_env, tmp_path):
    env, name = dev_env
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    dev = DevProcess(poc, env, "--fresh", "--input-dir", str(inputs), "--output-dir", str(outputs))
    try:
        assert wait_for(lambda: (outputs / "hello.txt.txt").exists(), 180), dev.output()
        assert (outputs / "hello.txt.txt").read_text().startswith("bytes: ")  # seeded from examples/input
        assert wait_for(lambda: dev.saw("[instance-0] wrote hello.txt.txt"), 30), dev.output()  # logs streamed
        # Deployed with the workload's own short scan interval, so new inputs are taken at once.
        assert json.loads((node_of(poc) / name / "workload.json").read_text())["env"]["THUMBS_INTERVAL"] == "0.2"

        # One line changed, as an editor saves it: the existing input's output is made again by the new module.
        source = poc / LIB
        source.write_text(source.read_text().replace(SUMMARY_LINE, SUMMARY_LINE.replace("bytes", "size")))
        assert wait_for(lambda: text_of(outputs / "hello.txt.txt").startswith("size: "), 120), dev.output()
        assert dev.saw("src/thumbs/src/lib.rs changed")

        # A change that does not compile: the error is shown, and the last good workload keeps running.
        mark = len(dev.lines)
        source.write_text(source.read_text().replace(SUMMARY_LINE.replace("bytes", "size"), "format!(oops"))
        assert wait_for(lambda: dev.saw("error: cargo build failed", mark), 120), dev.output()
        assert wait_for(lambda: dev.saw("keeps running the last good module", mark), 30), dev.output()
        (inputs / "later.txt").write_text("one two\n")
        assert wait_for(lambda: (outputs / "later.txt.txt").exists(), 30), dev.output()
        assert (outputs / "later.txt.txt").read_text().startswith("size: 8\n")
        assert f"default/{name}  Pod  Running" in invoke("status", env=env, cwd=poc).stdout
    finally:
        status = dev.interrupt()
        (poc / LIB).write_text((poc / LIB).read_text().replace("format!(oops", SUMMARY_LINE))
    assert status == 0, dev.output()
    assert dev.saw(f"dev: stopped; undeployed default/{name}"), dev.output()
    assert "Traceback" not in dev.output()
    assert not (node_of(poc) / name).exists()
    assert f"default/{name}" not in invoke("status", env=env, cwd=poc).stdout


def test_an_invoke_yaml_that_does_not_parse_is_one_error_and_a_saved_template_redeploys(poc, dev_env, tmp_path):
    env, name = dev_env
    config = poc / "invoke.yaml"
    original = config.read_text()
    template = poc / "templates" / "k8s" / "pod.yaml.j2"
    template_text = template.read_text()
    dev = DevProcess(poc, env, "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"))
    try:
        assert wait_for(lambda: dev.saw(f"deployed Pod default/{name}"), 180), dev.output()
        mark = len(dev.lines)
        # Saved by rename, as many editors do: a watch on the file itself would see the first save only.
        save_by_rename(config, original + "\ndeploy: [unclosed\n")
        assert wait_for(lambda: dev.saw("error: cannot read", mark), 60), dev.output()
        assert wait_for(lambda: dev.saw("keeps running the last good module", mark), 30), dev.output()
        # Asked of the PoC's node itself: every invoke in the PoC reads the broken invoke.yaml.
        assert f"default/{name}  Pod  Running" in LocalNode(poc / ".cache" / "node").status("default", name).describe()
        mark = len(dev.lines)
        save_by_rename(config, original)
        assert wait_for(lambda: dev.saw("unchanged", mark), 60), dev.output()
        # A template saved: the module and settings are the same, the Pod is not.
        mark = len(dev.lines)
        with template.open("a") as edited:
            edited.write("# edited\n")
        assert wait_for(lambda: dev.saw(f"deployed Pod default/{name}", mark), 60), dev.output()
        assert dev.saw("templates/k8s/pod.yaml.j2 changed", mark) and not dev.saw("unchanged", mark)
    finally:
        template.write_text(template_text)
        config.write_text(original)
        status = dev.interrupt()
    assert status == 0 and "Traceback" not in dev.output(), dev.output()
    assert not (node_of(poc) / name).exists()


def test_a_module_that_fails_at_start_is_said_to_be_failing_and_ctrl_c_undeploys_it(poc, dev_env, tmp_path):
    env, name = dev_env
    main = poc / "src/thumbs/src/main.rs"
    original = main.read_text()
    # It builds, and its instance exits at once: the first deploy fails, yet the workload is there (as a Pod stays).
    main.write_text(original.replace("    let options = parse_options();\n",
                                     '    let options = parse_options();\n    eprintln!("boom"); process::exit(3);\n'))
    try:
        dev = DevProcess(poc, env, "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"))
        try:
            assert wait_for(lambda: dev.saw("instance #0 exited with status 3: boom"), 180), dev.output()
            assert wait_for(lambda: dev.saw(f"dev: on the local node now: default/{name}  Pod"), 30), dev.output()
            assert not dev.saw("keeps running the last good module")
            assert (node_of(poc) / name).exists()
        finally:
            status = dev.interrupt()
    finally:
        main.write_text(original)
    assert status == 0 and "Traceback" not in dev.output(), dev.output()
    assert not (node_of(poc) / name).exists()  # the failing workload dev deployed is undeployed too


@pytest.mark.parametrize("interval", ["nope", "0", "61"])
def test_a_bad_interval_is_one_line_before_anything_is_built(poc, interval):
    done = invoke("dev", "--interval", interval, cwd=poc, timeout=60)
    assert done.returncode == 1 and done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --interval must be"), done.stderr
    assert done.stdout == ""


def test_the_bench_row_times_a_save_and_stops_the_pocs_own_registry():
    """`invoke bench`'s dev row: a new PoC's dev loop timed once; the registry that PoC started
    (its own, in its temporary folder) is stopped with it, not left running."""
    from wasmpod.bench import dev_save_to_output
    from wasmpod.project import Project

    (seconds,) = dev_save_to_output(Project.at(ROOT), 1)
    assert 0 < seconds < 120
    running = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "wasmpod-bench-dev-" not in running, running
