"""The file side of the contract: recursion, skipping, bad input, claims, atomic writes, watch mode."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testkit import wait_for

from coretools import INVOKE, ROOT, clean_env, load, noise, run_module, save
from reference import expected_pixels
from wasmpod.processes import is_alive


def hidden_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


def test_inputs_are_found_recursively_and_mirrored(run, tmp_path):
    save(noise(8, 9, 3), tmp_path / "in" / "a" / "b" / "c.png")
    save(noise(8, 9, 3), tmp_path / "in" / "X.PNG")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    assert sorted(done.wrote()) == ["X.PNG", "a/b/c.png"]
    assert (tmp_path / "out" / "a" / "b" / "c.png").is_file()


def test_hidden_and_non_image_files_are_left_alone_silently(run, tmp_path):
    save(noise(8, 9, 3), tmp_path / "in" / "good.png")
    save(noise(8, 9, 3), tmp_path / "in" / ".partial.png")
    save(noise(8, 9, 3), tmp_path / "in" / ".hidden" / "inside.png")
    (tmp_path / "in" / "README").write_text("not an image")
    (tmp_path / "in" / "sums.sha256").write_text("0000")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0 and done.stderr == ""
    assert done.wrote() == ["good.png"]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["good.png"]


def test_format_is_read_from_the_content_not_the_extension(run, tmp_path):
    pixels = noise(10, 12, 3)
    save(pixels, tmp_path / "in" / "looks.jpg", format="PNG")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    with Image.open(tmp_path / "out" / "looks.jpg") as written:
        assert written.format == "PNG"
    assert np.array_equal(load(tmp_path / "out" / "looks.jpg"), expected_pixels(pixels))


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Bad files, by name, with a word their error line must carry."""
    folder.mkdir(parents=True, exist_ok=True)
    good = save(noise(40, 40, 3), folder / "good.png").read_bytes()
    (folder / "corrupt.png").write_bytes(good[:33] + bytes(range(256)) * 4)
    (folder / "empty.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    jpeg = save(noise(40, 40, 3), folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "text.png").write_text("this is not an image\n")
    save(noise(60, 60, 3), folder / "big.png")
    return {"corrupt.png": "corrupt", "empty.png": "empty", "truncated.png": "truncat", "text.png": "not an image",
            "big.png": "too large"}


def test_bad_inputs_are_reported_once_each_by_name_and_the_rest_is_written(run, tmp_path):
    bad = make_bad_inputs(tmp_path / "in")
    done = run(tmp_path / "in", tmp_path / "out", "--max-pixels", "2000")
    assert done.status == 1
    lines = done.stderr.strip().splitlines()
    for name, word in bad.items():
        mine = [line for line in lines if f" {name}:" in line]
        assert len(mine) == 1, (name, lines)
        assert word in mine[0].lower(), mine[0]
        assert not (tmp_path / "out" / name).exists()
    assert set(done.wrote()) >= {"good.png"}
    assert "Traceback" not in done.stderr and "panicked" not in done.stderr


def test_status_is_zero_when_all_written_or_already_done(run, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "a.png")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    again = run(tmp_path / "in", tmp_path / "out")
    assert again.status == 0 and again.wrote() == []


def test_second_run_rewrites_nothing(run, tmp_path):
    for i in range(4):
        save(noise(16, 16 + i, 3, seed=i), tmp_path / "in" / f"{i}.png")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (tmp_path / "out").iterdir()}
    time.sleep(0.02)
    again = run(tmp_path / "in", tmp_path / "out")
    assert again.status == 0 and again.wrote() == []
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in (tmp_path / "out").iterdir()} == before


def test_no_temporary_or_claim_file_is_left_after_a_run(run, tmp_path):
    make_bad_inputs(tmp_path / "in")
    run(tmp_path / "in", tmp_path / "out", "--max-pixels", "2000")
    assert hidden_files(tmp_path / "out") == []


def test_a_fresh_claim_of_another_instance_is_respected(run, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    claim = tmp_path / "out" / ".a.png.claim"
    claim.write_text("other 0\n")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0 and done.wrote() == []
    assert not (tmp_path / "out" / "a.png").exists() and claim.exists()


def test_a_claim_older_than_ten_minutes_is_taken_over(run, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    claim = tmp_path / "out" / ".a.png.claim"
    claim.write_text("dead 0\n")
    (tmp_path / "out" / ".a.png.dead.tmp").write_bytes(b"half")
    old = time.time() - 11 * 60
    os.utime(claim, (old, old))
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0 and done.wrote() == ["a.png"]
    assert hidden_files(tmp_path / "out") == []


def test_three_instances_on_one_directory_write_every_image_exactly_once(module, tmp_path):
    names = []
    for i in range(30):
        names.append(f"img{i:02}.png")
        save(noise(48, 64, 3, seed=i), tmp_path / "in" / names[-1])
    results = []

    def instance(n: int) -> None:
        results.append(run_module(module, tmp_path / "in", tmp_path / "out", "--instance", f"i{n}"))

    threads = [threading.Thread(target=instance, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(results) == 3 and all(r.status == 0 for r in results), [r.stderr for r in results]
    written = [name for r in results for name in r.wrote()]
    assert sorted(written) == names  # each exactly once, in all
    for i, name in enumerate(names):
        assert np.array_equal(load(tmp_path / "out" / name), expected_pixels(noise(48, 64, 3, seed=i)))
    assert hidden_files(tmp_path / "out") == []


def test_watch_mode_picks_up_a_file_added_later_and_ctrl_c_stops_it_cleanly(tmp_path):
    save(noise(20, 20, 3), tmp_path / "in" / "first.png")
    (tmp_path / "in" / "bad.png").write_text("nope")
    process = subprocess.Popen([str(INVOKE), "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                "--interval", "0.2"], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "out" / "first.png").exists())
        save(noise(30, 30, 3, seed=9), tmp_path / "in" / "sub" / "later.png")
        assert wait_for(lambda: (tmp_path / "out" / "sub" / "later.png").exists())
        time.sleep(1.0)  # several more scans over the unchanged bad file
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in stderr
    assert stderr.count("bad.png") == 1, stderr  # reported once while unchanged
    assert [line for line in stdout.splitlines() if line.startswith("wrote ")] == [
        line for line in stdout.splitlines() if line.startswith(("wrote first.png", "wrote sub/later.png"))]
    assert np.array_equal(load(tmp_path / "out" / "sub" / "later.png"), expected_pixels(noise(30, 30, 3, seed=9)))
    assert hidden_files(tmp_path / "out") == []


def _wasm_child_of(parent: int) -> int | None:
    """The pid of the process `invoke run` runs the module in (`python -m wasmpod.localrun`)."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"wasmpod.localrun" in cmdline:
            return int(entry.name)
    return None


def _watching(tmp_path: Path) -> subprocess.Popen:
    save(noise(20, 20, 3), tmp_path / "in" / "first.png")
    process = subprocess.Popen([str(INVOKE), "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                "--interval", "0.2"], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: (tmp_path / "out" / "first.png").exists())
    return process


def test_sigterm_stops_a_watching_run_like_ctrl_c(tmp_path):
    """A cancelled CI job sends SIGTERM: the run ends with its module, nothing left behind."""
    process = _watching(tmp_path)
    try:
        child = _wasm_child_of(process.pid)
        assert child is not None
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert wait_for(lambda: not is_alive(child), seconds=10)
    assert hidden_files(tmp_path / "out") == []


def test_a_killed_run_takes_its_module_with_it(tmp_path):
    """SIGKILL leaves `invoke run` no chance to stop anything: the kernel ends the module's process."""
    process = _watching(tmp_path)
    try:
        child = _wasm_child_of(process.pid)
        assert child is not None
        process.kill()
        process.communicate(timeout=30)
        assert wait_for(lambda: not is_alive(child), seconds=10)
    finally:
        if process.poll() is None:
            process.kill()


def test_watch_mode_reports_a_bad_file_again_once_it_changes(module, tmp_path):
    """A bad file is reported once while unchanged, and looked at again when it changes."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.png").write_text("not yet")
    process = subprocess.Popen([str(INVOKE), "run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                                "--interval", "0.2"], cwd=ROOT, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        save(noise(10, 10, 3), tmp_path / "in" / "x.png")
        assert wait_for(lambda: (tmp_path / "out" / "x.png").exists())
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert stderr.count("x.png") == 1, stderr


@pytest.mark.parametrize("kind", ["lossless", "lossy", "lossy-with-alpha"])
def test_an_oversized_webp_is_refused_from_its_header_before_decoding(run, tmp_path, kind):
    # The header says 3000x2000; everything after it is cut off, so only a check made before
    # decoding can see the size (a decoder would first fail on the missing data).
    channels = 4 if kind == "lossy-with-alpha" else 3
    full = tmp_path / "full.webp"
    save(np.zeros((2000, 3000, channels), np.uint8), full, lossless=kind == "lossless")
    (tmp_path / "in").mkdir()
    # The image chunk cut to what its header needs (a lossy frame's first partition), and the
    # chunk's and the RIFF's sizes made to match, so that the completeness check passes it on.
    data = full.read_bytes()
    at = data.find(b"VP8L" if kind == "lossless" else b"VP8 ", 12)  # the image chunk, the file's last
    keep = 5 if data[at:at + 4] == b"VP8L" else 10 + (int.from_bytes(data[at + 8:at + 11], "little") >> 5) + 1
    head = bytearray(data[:at + 8 + keep])
    head[at + 4:at + 8] = keep.to_bytes(4, "little")
    head[4:8] = (len(head) - 8).to_bytes(4, "little")
    assert len(head) < len(data)
    (tmp_path / "in" / "huge.webp").write_bytes(bytes(head))
    done = run(tmp_path / "in", tmp_path / "out", "--max-pixels", "5000000")
    assert done.status == 1
    assert "huge.webp: too large: 3000x2000 is 6000000 pixels" in done.stderr
