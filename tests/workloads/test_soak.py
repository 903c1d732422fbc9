"""The soak test: a Deployment of two replicas on the local node, watching, while images keep
arriving (some copied in slowly), the output disk fills and is freed, the output directory is
removed and recreated, the runner is killed, the registry restarted and the workload redeployed.
At the end every image is written exactly once into the final output directory, every output is
byte for byte what a `--once` run on the finished input writes, no claim or temporary file is
left, and the runner's memory did not grow. Bounded to a few minutes; real registry, real node."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import inotify_simple
import numpy as np
from PIL import Image

from testkit import ROOT, fill_file_system, invoke, small_tmpfs, wait_for
from wasmpod.build import build_module
from wasmpod.localrun import run_on_directories
from wasmpod.project import Project

FORMATS = [("png", {"format": "PNG"}), ("jpg", {"format": "JPEG", "quality": 85}),
           ("webp", {"format": "WEBP", "lossless": True}), ("bmp", {"format": "BMP"})]


def image_bytes(i: int) -> tuple[str, bytes]:
    extension, options = FORMATS[i % len(FORMATS)]
    pixels = np.random.default_rng(i).integers(0, 256, (48 + i % 7, 64 + i % 5, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **options)
    return f"img{i:03}.{extension}", buffer.getvalue()


class Feeder(threading.Thread):
    """Drops images into the input, one every `pause` seconds; every third is copied in slowly,
    in pieces, each longer apart than the watchers' scan interval."""

    def __init__(self, folder: Path, first: int, count: int, pause: float):
        super().__init__(daemon=True)
        self.folder, self.first, self.count, self.pause = folder, first, count, pause

    def run(self) -> None:
        for i in range(self.first, self.first + self.count):
            name, data = image_bytes(i)
            with open(self.folder / name, "wb") as handle:
                pieces = 4 if i % 3 == 0 else 1
                step = len(data) // pieces + 1
                for at in range(0, len(data), step):
                    handle.write(data[at:at + step])
                    handle.flush()
                    if pieces > 1:
                        time.sleep(0.4)
            time.sleep(self.pause)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def runner_pid(name: str) -> int:
    return json.loads((ROOT / ".cache" / "node" / "default" / name / "runner.json").read_text())["pid"]


def test_soak(registry, env, tmp_path, workload_names):
    name = workload_names("soak")
    inputs = tmp_path / "in"
    inputs.mkdir()
    assert invoke("push", "--registry", registry.address, env=env).returncode == 0
    with small_tmpfs(tmp_path / "disk", size="8m") as disk:
        out = disk / "out"
        deploy = ["deploy", "--registry", registry.address, "--name", name, "--kind", "deployment", "--replicas", "2",
                  "--input-dir", str(inputs), "--output-dir", str(out), "--env", "FRACTALIFY_INTERVAL=0.3"]
        done = invoke(*deploy, env=env)
        assert done.returncode == 0, done.stderr
        feeder = Feeder(inputs, 0, 24, pause=0.25)
        feeder.start()
        time.sleep(2.0)
        filler = fill_file_system(disk)  # the output disk is full while images arrive
        time.sleep(3.0)
        filler.unlink()
        time.sleep(2.0)
        logs = invoke("logs", "--name", name, env=env).stdout
        assert "no space left on device" in logs and "writing again" in logs, logs
        # The output directory goes away under the watchers and comes back at once; from here on
        # every image must be written into the new one exactly once.
        for path in sorted(out.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        out.rmdir()
        out.mkdir()
        watcher = inotify_simple.INotify()
        watcher.add_watch(out, inotify_simple.flags.MOVED_TO | inotify_simple.flags.CREATE)
        moved: list[str] = []
        watching = threading.Event()

        def collect() -> None:
            while not watching.is_set():
                moved.extend(e.name for e in watcher.read(timeout=200) if e.mask & inotify_simple.flags.MOVED_TO)

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        feeder.join()
        # Each watcher found its directory gone, ended with status 75 and was restarted on the new one.
        assert wait_for(lambda: invoke("status", env=env).stdout.count("restarts") >= 2, 30), invoke("status", env=env).stdout
        # The runner dies (its instances with it, mid-work or not), the registry restarts, and
        # the workload is deployed again: it pulls from the restarted registry.
        os.kill(runner_pid(name), signal.SIGKILL)
        registry.stop()
        registry.start()
        done = invoke(*deploy, env=env)
        assert done.returncode == 0, done.stderr
        runner = runner_pid(name)
        time.sleep(3.0)
        memory_before = rss(runner)
        more = Feeder(inputs, 100, 16, pause=0.2)
        more.start()
        more.join()
        every = sorted(p.name for p in inputs.iterdir())
        expected_names = [n + ".png" if n.endswith(".webp") else n for n in every]
        assert wait_for(lambda: all((out / n).exists() for n in expected_names), 120), \
            sorted(set(expected_names) - {p.name for p in out.iterdir()})
        time.sleep(1.5)  # a few more scans: nothing may be written twice
        memory_after = rss(runner)
        watching.set()
        collector.join()
        watcher.close()
        written = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
        leftovers = [p.name for p in out.rglob(".*")]
        gone = invoke("undeploy", "--name", name, env=env)
        assert gone.returncode == 0, gone.stderr

    assert sorted(moved) == sorted(expected_names)  # each exactly once into the final directory
    assert leftovers == []
    module = build_module(Project.at(ROOT, "fractalify")).path
    once = run_on_directories(module, "fractalify", inputs, tmp_path / "once", ["--once"], {})
    assert once.status == 0
    reference = {p.name: p.read_bytes() for p in (tmp_path / "once").iterdir()}
    assert written.keys() == reference.keys()
    assert [n for n in written if written[n] != reference[n]] == []
    print(f"runner RSS {memory_before / 2**20:.1f} MiB -> {memory_after / 2**20:.1f} MiB")
    assert memory_after - memory_before < 8 * 2**20
