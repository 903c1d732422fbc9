"""The contract's "Faults and hostile input": incomplete files, lying headers, links, names, the
byte budget, animations, a restarted instance's claims, and outputs that appear only by rename.
(Faults of the output's file system, which need a file system of the test's own, are in
test_output_faults.py.)"""

from __future__ import annotations

import io
import os
import random
import signal
import struct
import subprocess
import threading
import time
import zlib
from pathlib import Path

import inotify_simple
import numpy as np
import pytest
from PIL import Image

from coretools import load, noise, run_module, save, stop_watching, watch
from reference import expected_pixels
from testkit import INVOKE, ROOT, clean_env, invoke, wait_for

FORMATS = {"png": {"format": "PNG"}, "jpg": {"format": "JPEG", "quality": 90},
           "progressive.jpg": {"format": "JPEG", "progressive": True}, "gif": {"format": "GIF"},
           "bmp": {"format": "BMP"}, "tiff": {"format": "TIFF"}, "deflate.tiff": {"format": "TIFF", "compression": "tiff_deflate"},
           "webp": {"format": "WEBP", "quality": 80}, "lossless.webp": {"format": "WEBP", "lossless": True}}


def encoded(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, **options)
    return buffer.getvalue()


def hidden_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file()]


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_an_incomplete_file_of_any_format_never_becomes_an_output(run, tmp_path, kind):
    data = encoded(noise(120, 160, 3), **FORMATS[kind])
    extension = kind.rsplit(".", 1)[-1]
    cuts = {f"cut{percent}.{extension}": data[: len(data) * percent // 100] for percent in (30, 60, 90, 99)}
    cuts[f"cut-last-byte.{extension}"] = data[:-1]
    (tmp_path / "in").mkdir()
    for name, part in cuts.items():
        (tmp_path / "in" / name).write_bytes(part)
    (tmp_path / "in" / f"whole.{extension}").write_bytes(data)
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 1
    assert [Path(p).stem for p in done.wrote()] == ["whole"] or done.wrote() == [f"whole.{extension}.png"]
    for name in cuts:
        lines = [line for line in done.stderr.splitlines() if f" {name}:" in line]
        assert len(lines) == 1 and "truncated" in lines[0], (name, done.stderr)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(done.wrote())


def png_promising(width: int, height: int) -> bytes:
    """A complete, valid-looking PNG whose header promises width x height RGB pixels, with a few
    bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_promising(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to promise width x height."""
    data = bytearray(encoded(noise(16, 16, 3), format="JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("name, data", [("lying.png", png_promising(7000, 7000)), ("lying.jpg", jpeg_promising(7000, 7000))])
def test_a_header_promising_far_more_pixels_than_the_file_holds_is_refused(run, tmp_path, name, data):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(data)
    # Limits high enough that only the file's own size can refuse it.
    done = run(tmp_path / "in", tmp_path / "out", "--max-bytes", str(8 << 30), "--max-pixels", "100000000")
    assert done.status == 1 and done.wrote() == []
    assert f"{name}: corrupt" in done.stderr and "7000x7000" in done.stderr and "far more than" in done.stderr


def test_the_byte_budget_refuses_an_image_before_decoding_with_the_figure(run, tmp_path):
    save(noise(500, 400, 4), tmp_path / "in" / "big.png")
    save(noise(20, 20, 3), tmp_path / "in" / "small.png")
    done = run(tmp_path / "in", tmp_path / "out", "--max-bytes", "1000000")
    assert done.status == 1 and done.wrote() == ["small.png"]
    line = next(line for line in done.stderr.splitlines() if "big.png" in line)
    assert "too large for --max-bytes 1000000" in line and "400x500" in line
    needed = int(line.split(" needs ")[1].split()[0])
    assert needed > 400 * 500 * 4 * 2  # the image and the output, at least
    by_variable = run(tmp_path / "in", tmp_path / "again", env={"FRACTALIFY_MAX_BYTES": str(needed)})
    assert by_variable.status == 0 and sorted(by_variable.wrote()) == ["big.png", "small.png"]
    too_little = run(tmp_path / "in", tmp_path / "third", env={"FRACTALIFY_MAX_BYTES": str(needed - 1)})
    assert too_little.wrote() == ["small.png"]


def test_links_are_not_followed_the_walk_ends_and_each_image_is_written_once(run, tmp_path):
    save(noise(10, 12, 3), tmp_path / "in" / "a.png")
    save(noise(10, 12, 3, seed=2), tmp_path / "in" / "sub" / "b.png")
    os.symlink(".", tmp_path / "in" / "self")
    os.symlink("..", tmp_path / "in" / "sub" / "up")
    os.symlink("a.png", tmp_path / "in" / "alias.png")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    assert sorted(done.wrote()) == ["a.png", "sub/b.png"]
    for link in ("self", "sub/up", "alias.png"):
        assert sum(f" {link}: is a symbolic link" in line for line in done.stderr.splitlines()) == 1, done.stderr


def test_a_link_is_reported_once_in_watch_mode(tmp_path):
    save(noise(10, 12, 3), tmp_path / "in" / "a.png")
    os.symlink(".", tmp_path / "in" / "loop")
    process = watch(tmp_path / "in", tmp_path / "out")
    try:
        assert wait_for(lambda: (tmp_path / "out" / "a.png").exists(), 30)
        time.sleep(1.0)  # several more scans
    finally:
        stdout, stderr = stop_watching(process)
    assert stderr.count("loop: is a symbolic link") == 1, stderr
    assert stdout.count("wrote ") == 1


FORGED = "x\nwrote forged.png (1 bytes, 1 ms)\r.png"


def test_no_file_name_can_start_a_log_line_or_forge_a_wrote_line(run, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / FORGED)
    (tmp_path / "in" / "bad\nwrote evil.png (2 bytes, 2 ms).png").write_text("not an image")
    done = run(tmp_path / "in", tmp_path / "out")
    wrote = [line for line in done.stdout.splitlines() if line.startswith("wrote ")]
    assert wrote == ["wrote x\\x0awrote forged.png (1 bytes, 1 ms)\\x0d.png " + wrote[0].split(".png ", 2)[-1]]
    assert (tmp_path / "out" / FORGED).is_file()
    assert [line for line in done.stderr.splitlines() if not line.startswith("fractalify: ")] == []
    assert "bad\\x0awrote evil.png" in done.stderr


def test_a_name_that_is_not_utf8_does_not_stop_the_scan_of_the_others(run, tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "fine" / "a.png")
    save(noise(8, 8, 3), tmp_path / "in" / "top.png")
    odd = tmp_path / "in" / "odd"
    odd.mkdir()
    with open(os.path.join(os.fsencode(odd), b"caf\xe9.png"), "wb") as handle:
        handle.write(encoded(noise(8, 8, 3), format="PNG"))
    done = run(tmp_path / "in", tmp_path / "out")
    assert sorted(done.wrote()) == ["fine/a.png", "top.png"]
    # wasmtime refuses to list a directory holding such a name: said once, by the directory's name.
    lines = [line for line in done.stderr.splitlines() if "odd" in line]
    assert len(lines) == 1 and "not valid UTF-8" in lines[0], done.stderr
    assert done.status == 1  # its images were not processed: a Job must not report success


def test_invoke_run_names_the_name_that_is_not_utf8(tmp_path):
    save(noise(8, 8, 3), tmp_path / "in" / "top.png")
    (tmp_path / "in" / "odd").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "in" / "odd"), b"caf\xe9\n.png"), "wb") as handle:
        handle.write(encoded(noise(8, 8, 3), format="PNG"))
    done = invoke("run", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--once")
    assert done.returncode == 1
    assert "run: odd/caf\\xe9\n.png: this name is not valid UTF-8" not in done.stderr  # escaped, newline too
    line = next(line for line in done.stderr.splitlines() if line.startswith("run: odd/"))
    assert line.startswith("run: odd/caf\\xe9\\x0a.png: this name is not valid UTF-8"), line
    assert "wrote top.png" in done.stdout


def test_invoke_run_killed_outright_is_taken_over_at_once_by_the_next_run(tmp_path):
    """`kill -9` leaves the image being processed claimed; the next `invoke run` on that output
    directory is the same instance, so it takes the claim back and writes the image now, not in
    ten minutes; a run beside a live one is another instance and leaves that one's images alone."""
    save(noise(1500, 2000, 3), tmp_path / "in" / "big.png")
    save(noise(8, 8, 3), tmp_path / "in" / "small.png")
    out = tmp_path / "out"
    env = clean_env()
    first = subprocess.Popen([str(INVOKE), "run", "--input", str(tmp_path / "in"), "--output", str(out), "--once"],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: (out / ".big.png.claim").exists(), 60)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert (out / ".big.png.claim").exists()  # killed mid-image: its claim stays
    done = invoke("run", "--input", str(tmp_path / "in"), "--output", str(out), "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert "took back 1 claim(s)" in done.stderr and " 0 claimed by another instance" in done.stdout
    assert (out / "big.png").is_file() and hidden_files(out) == []


def test_runs_at_once_on_one_output_directory_are_different_instances_and_a_finished_ones_id_is_reused(tmp_path):
    from wasmpod.localrun import _stable_instance

    with _stable_instance(tmp_path / "out", tmp_path / "locks") as first:
        with _stable_instance(tmp_path / "out", tmp_path / "locks") as second:
            with _stable_instance(tmp_path / "other", tmp_path / "locks") as elsewhere:
                assert len({first, second, elsewhere}) == 3 and first.endswith("-0") and second.endswith("-1")
    with _stable_instance(tmp_path / "out", tmp_path / "locks") as again:
        assert again == first


def test_a_name_as_long_as_the_file_system_allows_is_processed(run, tmp_path):
    name = "n" * 251 + ".png"  # 255 bytes: its claim and temporary names would be longer
    save(noise(8, 8, 3), tmp_path / "in" / name)
    done = run(tmp_path / "in", tmp_path / "out", "--instance", "i" * 64)
    assert done.status == 0, done.stderr
    assert done.wrote() == [name] and (tmp_path / "out" / name).is_file()
    assert hidden_files(tmp_path / "out") == []


def animated_gif(path: Path, frames: int) -> list[np.ndarray]:
    pictures = [noise(20, 30, 3, seed=i) for i in range(frames)]
    images = [Image.fromarray(p).quantize(colors=256, dither=Image.Dither.NONE).convert("RGB") for p in pictures]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return [np.asarray(i) for i in images]


def test_an_animation_is_processed_as_its_first_frame_and_the_log_says_so(run, tmp_path):
    first, second, _ = animated_gif(tmp_path / "in" / "anim.gif", 3)
    save(noise(10, 10, 3), tmp_path / "in" / "still.png")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("wrote anim.gif"))
    assert "first frame of 3" in line and line.endswith(" ms)")
    still = next(line for line in done.stdout.splitlines() if line.startswith("wrote still.png"))
    assert "frame" not in still
    with Image.open(tmp_path / "out" / "anim.gif") as written:
        assert getattr(written, "n_frames", 1) == 1
        got = np.asarray(written.convert("RGB"))
    # GIF output is quantised to 256 colours, so compare distances: it is the first frame's picture.
    def distance(frame: np.ndarray) -> float:
        return float(np.abs(got.astype(int) - expected_pixels(frame).astype(int)).mean())

    assert distance(first) * 3 < distance(second)


def webp_chunks(data: bytes) -> list[tuple[bytes, int]]:
    """(fourcc, offset of its size field) of each chunk of a WebP file."""
    chunks, at = [], 12
    while at + 8 <= len(data):
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        chunks.append((data[at:at + 4], at + 4))
        at += 8 + size + (size & 1)
    return chunks


def webp_lying_chunk(data: bytes) -> bytes:
    """Cut in half with the RIFF length made to fit: the image chunk still declares its whole size."""
    cut = bytearray(data[: len(data) // 2])
    cut[4:8] = struct.pack("<I", len(cut) - 8)
    return bytes(cut)


def webp_cut_first_partition(data: bytes) -> bytes:
    """A lossy WebP cut inside its first partition, with every size made to fit what is left."""
    kind, size_at = webp_chunks(data)[-1]
    assert kind == b"VP8 "
    first = int.from_bytes(data[size_at + 4:size_at + 7], "little") >> 5
    cut = bytearray(data[: size_at + 4 + 10 + first // 2])
    cut[size_at:size_at + 4] = struct.pack("<I", len(cut) - size_at - 4)
    cut[4:8] = struct.pack("<I", len(cut) - 8)
    return bytes(cut)


def webp_cut_tokens(data: bytes) -> bytes:
    """A lossy WebP whose last (token) partition is cut in half, every size made to fit what is left."""
    kind, size_at = webp_chunks(data)[-1]
    assert kind == b"VP8 "
    size = struct.unpack("<I", data[size_at:size_at + 4])[0]
    first = int.from_bytes(data[size_at + 4:size_at + 7], "little") >> 5
    keep = 10 + first + (size - 10 - first) // 2
    cut = bytearray(data[: size_at + 4 + keep])
    cut[size_at:size_at + 4] = struct.pack("<I", keep)
    if keep % 2:
        cut += b"\0"
    cut[4:8] = struct.pack("<I", len(cut) - 8)
    return bytes(cut)


def test_a_webp_whose_chunks_do_not_fit_or_animate_is_refused_and_stills_of_every_kind_are_written(run, tmp_path):
    pixels = noise(60, 80, 4, seed=9)
    stills = {"lossy.webp": encoded(pixels[..., :3], format="WEBP", quality=80),
              "lossless.webp": encoded(pixels[..., :3], format="WEBP", lossless=True),
              # (Lossy with alpha, VP8X + ALPH + VP8, is beyond image 0.24.3's decoder: "corrupt webp data".)
              "alpha-lossless.webp": encoded(pixels, format="WEBP", lossless=True),
              "exif.webp": encoded(pixels[..., :3], format="WEBP", quality=80, exif=b"Exif\0\0" + bytes(7))}
    frames = [Image.fromarray(noise(30, 40, 3, seed=i)) for i in range(3)]
    animation = io.BytesIO()
    frames[0].save(animation, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    bad = {"lying-chunk.webp": webp_lying_chunk(stills["lossy.webp"]),
           "lying-lossless.webp": webp_lying_chunk(stills["lossless.webp"]),
           "cut-partition.webp": webp_cut_first_partition(stills["lossy.webp"]),
           "cut-tokens.webp": webp_cut_tokens(stills["lossy.webp"]),
           "cut-tokens-larger.webp": webp_cut_tokens(encoded(noise(200, 300, 3, seed=5), format="WEBP", quality=50)),
           "animated.webp": animation.getvalue()}
    (tmp_path / "in").mkdir()
    for name, data in {**stills, **bad}.items():
        (tmp_path / "in" / name).write_bytes(data)
    done = run(tmp_path / "in", tmp_path / "out")
    assert sorted(done.wrote()) == sorted(f"{name}.png" for name in stills), done.stderr
    for name in bad:
        (line,) = [line for line in done.stderr.splitlines() if f" {name}:" in line]
        assert ("truncated webp data" in line) if name != "animated.webp" else ("animated webp (3 frames)" in line), line
    assert done.status == 1 and hidden_files(tmp_path / "out") == []


def jpeg_scans(data: bytes) -> list[int]:
    """Where each start-of-scan marker of a JPEG is."""
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xDA]


def test_a_jpeg_cut_inside_its_scans_and_given_an_end_again_is_refused_and_whole_ones_are_written(run, tmp_path):
    """The decoder fills a scan cut short with zeros, and takes a progressive file with only its
    first scans: each is refused by name; JPEGs of every common shape are written."""
    pixels = noise(123, 157, 3, seed=12)  # not a multiple of the 8x8 or 16x16 MCU
    stills = {"420.jpg": encoded(pixels, format="JPEG", quality=90),
              "444.jpg": encoded(pixels, format="JPEG", quality=90, subsampling=0),
              "422.jpg": encoded(pixels, format="JPEG", quality=90, subsampling=1),
              "gray.jpg": encoded(pixels[..., 0], format="JPEG", quality=90),
              "restarts.jpg": encoded(pixels, format="JPEG", quality=90, restart_marker_blocks=5),
              "optimized.jpg": encoded(pixels, format="JPEG", quality=90, optimize=True),
              "progressive.jpg": encoded(pixels, format="JPEG", quality=90, progressive=True)}
    assert b"\xff\xdd" in stills["restarts.jpg"]  # a restart interval, so the walk meets RST markers
    end = b"\xff\xd9"
    bad = {}
    for name in ("420.jpg", "444.jpg", "gray.jpg", "restarts.jpg"):
        data, scan = stills[name], jpeg_scans(stills[name])[0]
        bad[f"cut-{name}"] = data[:scan + (len(data) - scan) // 2] + end
    progressive = stills["progressive.jpg"]
    bad["first-scans-progressive.jpg"] = progressive[:jpeg_scans(progressive)[2]] + end
    (tmp_path / "in").mkdir()
    for name, data in {**stills, **bad}.items():
        (tmp_path / "in" / name).write_bytes(data)
    done = run(tmp_path / "in", tmp_path / "out")
    assert sorted(done.wrote()) == sorted(stills), done.stderr
    for name in bad:
        (line,) = [line for line in done.stderr.splitlines() if f" {name}:" in line]
        assert "truncated jpeg data" in line, line
    assert done.status == 1 and hidden_files(tmp_path / "out") == []


def test_a_restarted_instance_takes_back_its_claims_at_once(run, tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        save(noise(8, 8, 3), tmp_path / "in" / name)
    out = tmp_path / "out"
    out.mkdir()
    now = str(int(time.time()))
    (out / ".a.png.claim").write_text(f"node-7 {now}\n")  # fresh: ours, from before a crash
    (out / ".a.png.node-7.tmp").write_bytes(b"half")
    (out / ".b.png.claim").write_text(f"node-8 {now}\n")  # fresh and another instance's: respected
    done = run(tmp_path / "in", out, "--instance", "node-7")
    assert done.status == 0, done.stderr
    assert sorted(done.wrote()) == ["a.png", "c.png"]
    assert "took back 2" in done.stderr
    assert sorted(p.name for p in hidden_files(out)) == [".b.png.claim"]


def test_outputs_appear_only_by_rename(module, tmp_path):
    """Watched with inotify: a final name is never created, opened for writing or written to in
    place; it only appears when a complete temporary file is renamed to it."""
    names = [f"img{i}.{ext}" for i, ext in enumerate(["png", "bmp", "tiff", "jpg", "gif"])]
    for i, name in enumerate(names):
        save(noise(40, 50, 3, seed=i), tmp_path / "in" / name)
    out = tmp_path / "out"
    out.mkdir()
    watcher = inotify_simple.INotify()
    flags = inotify_simple.flags
    watcher.add_watch(out, flags.CREATE | flags.OPEN | flags.MODIFY | flags.CLOSE_WRITE | flags.MOVED_TO)
    done = run_module(module, tmp_path / "in", out)
    events = watcher.read(timeout=1000)
    watcher.close()
    assert done.status == 0 and sorted(done.wrote()) == sorted(names)
    on_final = [(e.name, flags.from_mask(e.mask)) for e in events if e.name in names]
    assert sorted(name for name, _ in on_final) == sorted(names)
    assert all(masks == [flags.MOVED_TO] for _, masks in on_final), on_final


def png16(path: Path, rgba: np.ndarray) -> None:
    """A 16-bit RGBA PNG (Pillow cannot write one): raw rows, each with filter byte 0."""
    height, width, _ = rgba.shape
    rows = b"".join(b"\0" + rgba[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_sixteen_bit_rgba_keeps_its_alpha(run, tmp_path):
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 65536, (30, 40, 4), dtype=np.uint32).astype(np.uint16)
    rgba[:, :, 3] = np.linspace(0, 65535, 40, dtype=np.uint16)[None, :] ^ rng.integers(0, 4096, (30, 40), dtype=np.uint16)
    png16(tmp_path / "in" / "deep.png", rgba)
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    got = load(tmp_path / "out" / "deep.png")
    eight = np.round(rgba.astype(np.float64) / 257).astype(np.uint8)  # 16-bit to 8-bit as the image crate converts
    assert got.shape == (30, 40, 4)
    assert np.array_equal(got[:, :, 3], eight[:, :, 3])
    assert np.array_equal(got, expected_pixels(eight))


def mutants(seed: int, count: int) -> dict[str, bytes]:
    """Small images of every format, mutated: bytes flipped, runs overwritten, cut, spliced."""
    rng = random.Random(seed)
    samples = {kind: encoded(noise(24, 32, 3, seed=i), **options) for i, (kind, options) in enumerate(FORMATS.items())}
    found = {}
    for i in range(count):
        kind = rng.choice(sorted(samples))
        data = bytearray(samples[kind])
        for _ in range(rng.randint(1, 4)):
            operation = rng.choice(["flip", "run", "cut", "splice", "grow"])
            at = rng.randrange(len(data))
            if operation == "flip":
                data[at] ^= 1 << rng.randrange(8)
            elif operation == "run":
                data[at:at + 8] = bytes([rng.choice([0, 0xff, rng.randrange(256)])]) * 8
            elif operation == "cut":
                del data[at:at + rng.randint(1, 64)]
            elif operation == "splice":
                other = samples[rng.choice(sorted(samples))]
                data[at:] = other[rng.randrange(len(other)):]
            else:
                data[at:at] = os.urandom(rng.randint(1, 32))
        found[f"m{i:03}.{kind.rsplit('.', 1)[-1]}"] = bytes(data)
    return found


def test_a_fuzzed_corpus_through_the_decoders_never_traps_and_every_output_decodes(module, tmp_path):
    corpus = mutants(seed=11, count=240)
    (tmp_path / "in").mkdir()
    for name, data in corpus.items():
        (tmp_path / "in" / name).write_bytes(data)
    done = run_module(module, tmp_path / "in", tmp_path / "out", "--max-bytes", str(32 << 20))
    assert done.status in (0, 1), done.stderr[-2000:]
    assert "panicked" not in done.stderr and "unreachable" not in done.stderr
    failed = {line.split(": ", 2)[1] for line in done.stderr.splitlines() if line.startswith("fractalify: m")}
    wrote = {Path(p).name.removesuffix(".png") if p.endswith(".webp.png") else p for p in done.wrote()}
    assert wrote | failed == set(corpus) and not wrote & failed  # each input written or named, not both
    for path in (tmp_path / "out").iterdir():
        with Image.open(path) as image:
            image.load()
    assert hidden_files(tmp_path / "out") == []




@pytest.mark.parametrize("kind", ["lossless.webp", "webp", "progressive.jpg", "gif", "png"])
def test_watch_mode_takes_a_slowly_copied_file_only_once_it_is_complete(module, tmp_path, kind):
    pixels = noise(90, 120, 3, seed=4)
    data = encoded(pixels, **FORMATS[kind])
    name = "slow." + kind.rsplit(".", 1)[-1]
    (tmp_path / "in").mkdir()
    process = watch(tmp_path / "in", tmp_path / "out")
    try:
        def copy_slowly() -> None:
            with open(tmp_path / "in" / name, "wb") as handle:
                for at in range(0, len(data), max(1, len(data) // 6)):
                    handle.write(data[at:at + max(1, len(data) // 6)])
                    handle.flush()
                    time.sleep(0.45)  # longer than the interval: the watcher scans it half-written

        copier = threading.Thread(target=copy_slowly)
        copier.start()
        copier.join()
        output = tmp_path / "out" / (name + ".png" if name.endswith(".webp") else name)
        assert wait_for(output.exists, 30)
        time.sleep(1.0)
    finally:
        stdout, _ = stop_watching(process)
    assert stdout.count("wrote ") == 1
    whole = run_module(module, tmp_path / "in", tmp_path / "once")
    assert whole.status == 0
    assert output.read_bytes() == (tmp_path / "once" / output.name).read_bytes()
