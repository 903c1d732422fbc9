"""The module's pixels against the NumPy float32 reference: byte for byte where lossless."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from coretools import load, noise, save
from reference import expected_pixels, iteration_counts

SIZES = {"1x1": (1, 1), "tall": (50, 3), "wide": (3, 50), "odd": (23, 37), "larger": (90, 160)}


def test_reference_matches_the_pinned_values_of_the_rust_unit_tests():
    assert iteration_counts(1, 1)[0, 0] == 26
    assert iteration_counts(7, 5)[0, 0] == 0
    assert iteration_counts(64, 48)[30, 10] == 17
    assert iteration_counts(1920, 1080)[500, 700] == 8


@pytest.mark.parametrize("extension", ["png", "bmp", "tiff"])
@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("channels", [3, 4])
def test_lossless_outputs_equal_the_reference_byte_for_byte(run, tmp_path, extension, size, channels):
    height, width = SIZES[size]
    source = save(noise(height, width, channels, seed=height * 1000 + width), tmp_path / "in" / f"image.{extension}")
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    # What the input holds as decoded (Pillow writes an RGBA BMP without its alpha mask).
    pixels = load(source)
    got = load(tmp_path / "out" / f"image.{extension}")
    assert got.shape == pixels.shape
    assert np.array_equal(got, expected_pixels(pixels))


@pytest.mark.parametrize("channel", ["red", "green", "blue"])
def test_channel_constant_and_max_iter_flags_follow_the_reference(run, tmp_path, channel):
    pixels = noise(41, 67, 3)
    save(pixels, tmp_path / "in" / "a.png")
    done = run(tmp_path / "in", tmp_path / "out", "--channel", channel, "--c", "-0.7269,0.1889", "--max-iter", "100")
    assert done.status == 0, done.stderr
    assert np.array_equal(load(tmp_path / "out" / "a.png"), expected_pixels(pixels, channel, "-0.7269,0.1889", 100))


def test_variables_set_options_and_a_flag_beats_its_variable(run, tmp_path):
    pixels = noise(30, 40, 3)
    save(pixels, tmp_path / "in" / "a.png")
    env = {"FRACTALIFY_CHANNEL": "blue", "FRACTALIFY_C": "-0.8,0.156", "FRACTALIFY_MAX_ITER": ""}
    done = run(tmp_path / "in", tmp_path / "out", "--channel", "red", env=env)
    assert done.status == 0, done.stderr
    assert np.array_equal(load(tmp_path / "out" / "a.png"), expected_pixels(pixels, "red", "-0.8,0.156", 255))


def test_once_from_the_environment(run, tmp_path):
    save(noise(5, 5, 3), tmp_path / "in" / "a.png")
    done = run(tmp_path / "in", tmp_path / "out", env={"FRACTALIFY_ONCE": "true"},
               argv=("fractalify", "/input_dir", "/output_dir"))
    assert done.status == 0 and done.wrote() == ["a.png"]


def test_alpha_is_kept(run, tmp_path):
    pixels = noise(20, 30, 4)
    pixels[:, :, 3] = np.arange(30, dtype=np.uint8)[None, :] * 8
    save(pixels, tmp_path / "in" / "a.png")
    run(tmp_path / "in", tmp_path / "out")
    got = load(tmp_path / "out" / "a.png")
    assert np.array_equal(got[:, :, 3], pixels[:, :, 3])


def test_grey_input_becomes_rgb(run, tmp_path):
    grey = noise(25, 35, 1)[:, :, 0]
    (tmp_path / "in").mkdir()
    Image.fromarray(grey, "L").save(tmp_path / "in" / "g.png")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    got = load(tmp_path / "out" / "g.png")
    assert np.array_equal(got, expected_pixels(np.dstack([grey, grey, grey])))


def test_palette_input_becomes_rgb_and_with_transparency_rgba(run, tmp_path):
    (tmp_path / "in").mkdir()
    rgb = noise(24, 32, 3)
    paletted = Image.fromarray(rgb).quantize(16)
    paletted.save(tmp_path / "in" / "p.png")
    with_alpha = paletted.copy()
    with_alpha.info["transparency"] = 0
    with_alpha.save(tmp_path / "in" / "t.png", transparency=0)
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    expected_rgb = np.asarray(paletted.convert("RGB"))
    assert np.array_equal(load(tmp_path / "out" / "p.png"), expected_pixels(expected_rgb))
    expected_rgba = np.asarray(Image.open(tmp_path / "in" / "t.png").convert("RGBA"))
    got = load(tmp_path / "out" / "t.png")
    assert got.shape[2] == 4
    assert np.array_equal(got, expected_pixels(expected_rgba))


def test_grey_with_alpha_becomes_rgba(run, tmp_path):
    (tmp_path / "in").mkdir()
    grey, alpha = noise(19, 27, 2)[:, :, 0], noise(19, 27, 2, seed=4)[:, :, 1]
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "in" / "ga.png")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    assert np.array_equal(load(tmp_path / "out" / "ga.png"), expected_pixels(np.dstack([grey, grey, grey, alpha])))


def test_sixteen_bit_input_becomes_eight_bit_as_the_image_crate_converts(run, tmp_path):
    (tmp_path / "in").mkdir()
    grey16 = np.random.default_rng(3).integers(0, 65536, (21, 33), dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "in" / "deep.png")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    grey8 = ((grey16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    assert np.array_equal(load(tmp_path / "out" / "deep.png"), expected_pixels(np.dstack([grey8] * 3)))


def test_webp_input_is_written_as_lossless_png_with_png_added(run, tmp_path):
    pixels = noise(30, 45, 3)
    save(pixels, tmp_path / "in" / "cat.webp", lossless=True)
    done = run(tmp_path / "in", tmp_path / "out")
    assert done.status == 0, done.stderr
    assert done.wrote() == ["cat.webp.png"]
    with Image.open(tmp_path / "out" / "cat.webp.png") as written:
        assert written.format == "PNG"
    assert np.array_equal(load(tmp_path / "out" / "cat.webp.png"), expected_pixels(pixels))


def test_jpeg_output_is_close_to_the_reference(run, tmp_path):
    smooth = np.dstack([*np.meshgrid(np.linspace(0, 255, 120), np.linspace(0, 255, 80)), np.full((80, 120), 128.0)])
    save(smooth.astype(np.uint8), tmp_path / "in" / "a.jpg", quality=95)
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    decoded_input = load(tmp_path / "in" / "a.jpg").astype(int)
    got = load(tmp_path / "out" / "a.jpg").astype(int)
    expected = expected_pixels(decoded_input.astype(np.uint8)).astype(int)
    # JPEG at quality 90 re-quantises in YCbCr 8x8 blocks: small mean error, sharp edges aside.
    assert np.abs(got - expected).mean() < 6.0
    with Image.open(tmp_path / "out" / "a.jpg") as written:
        assert written.format == "JPEG"


def test_gif_output_is_close_to_the_reference(run, tmp_path):
    smooth = np.dstack([*np.meshgrid(np.linspace(0, 255, 100), np.linspace(0, 255, 60)), np.full((60, 100), 90.0)])
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth.astype(np.uint8)).quantize(64).save(tmp_path / "in" / "g.gif")
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    decoded_input = load(tmp_path / "in" / "g.gif")[:, :, :3]
    got = load(tmp_path / "out" / "g.gif")[:, :, :3].astype(int)
    expected = expected_pixels(np.ascontiguousarray(decoded_input)).astype(int)
    # GIF re-quantises to at most 256 colours (NeuQuant): close on average, not exact.
    assert np.abs(got - expected).mean() < 8.0
    with Image.open(tmp_path / "out" / "g.gif") as written:
        assert written.format == "GIF"


def test_webp_with_alpha_keeps_it(run, tmp_path):
    pixels = noise(20, 24, 4)
    pixels[:, :, 3] = 200
    save(pixels, tmp_path / "in" / "a.webp", lossless=True, exact=True)
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    got = load(tmp_path / "out" / "a.webp.png")
    assert got.shape[2] == 4 and np.array_equal(got, expected_pixels(load(tmp_path / "in" / "a.webp")))


def test_gif_transparency_is_kept(run, tmp_path):
    (tmp_path / "in").mkdir()
    sticker = Image.new("P", (60, 40), 0)  # an opaque square on a transparent background
    sticker.putpalette([10, 20, 30, 200, 100, 50])
    sticker.paste(1, (15, 10, 45, 30))
    sticker.save(tmp_path / "in" / "sticker.gif", transparency=0)
    seen = np.asarray(Image.open(tmp_path / "in" / "sticker.gif").convert("RGBA"))
    assert run(tmp_path / "in", tmp_path / "out").status == 0
    written = np.asarray(Image.open(tmp_path / "out" / "sticker.gif").convert("RGBA"))
    assert np.array_equal(written[:, :, 3], seen[:, :, 3])
    opaque = seen[:, :, 3] == 255
    assert np.array_equal(written[opaque], expected_pixels(seen)[opaque])
