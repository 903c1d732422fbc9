"""The pure kernel and the core's argument parsing, tested natively by the crate's own `cargo test`."""

from pathlib import Path

from wasmpod.build import cargo_test
from wasmpod.project import Project

ROOT = Path(__file__).resolve().parents[1]


def test_cargo_test_passes_for_the_fractal_core(tmp_path):
    log_path = tmp_path / "cargo-test.log"
    with log_path.open("w") as log:
        status = cargo_test(Project.at(ROOT, "fractalify"), log=log)
    log_text = log_path.read_text()
    assert status == 0, log_text
    assert "four_lane_kernel_equals_plain_loop_on_odd_sizes ... ok" in log_text
    assert "test result: FAILED" not in log_text
