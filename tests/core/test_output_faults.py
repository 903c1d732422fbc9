"""Faults of the output's file system in watch mode: a full disk, a read-only remount and a removed
output directory. The cause is named once, pending images are retried on every scan and all
written once it clears. Each test mounts a small tmpfs of its own (as root, like CI and bootstrap)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from coretools import noise, save, stop_watching, watch
from testkit import fill_file_system, small_tmpfs, wait_for


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    assert done.returncode == 0, f"mount {' '.join(args)}: {done.stderr.strip()}"


@pytest.fixture
def small_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk




def images(folder: Path, count: int, start: int = 0) -> list[str]:
    names = [f"img{i}.png" for i in range(start, start + count)]
    for i, name in enumerate(names):
        save(noise(60, 80, 3, seed=start + i), folder / name)
    return names


def test_a_full_disk_is_reported_once_and_every_pending_image_is_written_once_space_is_freed(small_disk, tmp_path):
    out = small_disk / "out"
    out.mkdir()
    process = watch(tmp_path / "in", out)
    try:
        first = images(tmp_path / "in", 1)
        assert wait_for(lambda: (out / first[0]).exists(), 30)
        filler = fill_file_system(small_disk)
        pending = images(tmp_path / "in", 4, start=10)
        time.sleep(3.0)  # many scans, each retrying the pending images
        assert not any((out / name).exists() for name in pending)
        filler.unlink()
        freed = time.monotonic()
        assert wait_for(lambda: all((out / name).exists() for name in pending), 30)
        print(f"space freed -> {len(pending)} pending images written: {time.monotonic() - freed:.2f} s (interval 0.3 s)")
    finally:
        stdout, stderr = stop_watching(process)
    full = [line for line in stderr.splitlines() if "no space left on device" in line and "writing again" not in line]
    assert len(full) == 1, stderr  # once per cause, not once per image or per scan
    assert "(os error" not in stderr
    assert "writing again" in stderr
    wrote = [line.split()[1] for line in stdout.splitlines() if line.startswith("wrote ")]
    assert sorted(wrote) == sorted(first + pending)  # each exactly once
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_read_only_output_is_named_and_retried_until_it_is_writable_again(small_disk, tmp_path):
    out = small_disk / "out"
    out.mkdir()
    process = watch(tmp_path / "in", out)
    try:
        mount("-o", "remount,ro", str(small_disk))
        pending = images(tmp_path / "in", 2)
        time.sleep(2.0)
        mount("-o", "remount,rw", str(small_disk))
        assert wait_for(lambda: all((out / name).exists() for name in pending), 30)
    finally:
        stdout, stderr = stop_watching(process)
    # The cause in words (wasmtime hands the module EIO for a read-only mount), once.
    assert len([line for line in stderr.splitlines() if "read-only" in line and "writing again" not in line]) == 1, stderr
    assert "(os error" not in stderr
    assert stdout.count("wrote ") == 2


def test_a_removed_output_directory_ends_the_module_and_invoke_run_starts_it_again_on_the_new_one(tmp_path):
    out = tmp_path / "out"
    process = watch(tmp_path / "in", out)
    try:
        images(tmp_path / "in", 1)
        assert wait_for(lambda: (out / "img0.png").exists(), 30)
        shutil.rmtree(out)
        out.mkdir()  # recreated at once: still not the directory the module holds
        later = images(tmp_path / "in", 1, start=5)
        assert wait_for(lambda: (out / later[0]).exists() and (out / "img0.png").exists(), 30)
    finally:
        stdout, stderr = stop_watching(process)
    # The module said why it ended (status 75), and `invoke run` started it again, as a node would.
    assert "output directory /output_dir was removed" in stderr and "status 75" in stderr, stderr
    assert f"starting fractalify again on the output directory {out}" in stderr
    assert process.returncode == 130  # then stopped by Ctrl-C as usual
