"""`invoke build`: the path last, --json, no rebuild when nothing changed, a clear line when no
toolchain is there."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from coretools import ROOT, invoke
from wasmpod.build import BuildRequest, source_fingerprint
from wasmpod.errors import UserError
from wasmpod.toolchain import find_toolchain


def test_build_prints_the_module_path_last(module):
    done = invoke("build")
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip().splitlines()[-1])
    assert path == module and path.read_bytes()[:4] == b"\0asm"


def test_build_json_describes_the_file_and_an_unchanged_tree_is_not_rebuilt(module):
    done = invoke("build", "--json")
    described = json.loads(done.stdout)
    data = Path(described["path"]).read_bytes()
    assert described["size"] == len(data)
    assert described["sha256"] == hashlib.sha256(data).hexdigest()
    assert described["rebuilt"] is False


def test_the_fingerprint_changes_with_a_source_file(tmp_path):
    crate = tmp_path / "crate"
    shutil.copytree(ROOT / "src" / "fractalify", crate, ignore=shutil.ignore_patterns("target", "Cargo.lock"))
    before = source_fingerprint(crate, BuildRequest())
    assert source_fingerprint(crate, BuildRequest()) == before
    assert source_fingerprint(crate, BuildRequest(simd=True)) != before
    main = crate / "src" / "main.rs"
    main.write_text(main.read_text() + "\n// changed\n")
    changed = source_fingerprint(crate, BuildRequest())
    assert changed != before
    kernel = crate / "kernel" / "src" / "lib.rs"
    kernel.write_text(kernel.read_text() + "\n// changed\n")
    assert source_fingerprint(crate, BuildRequest()) != changed


def test_no_toolchain_names_what_to_install(tmp_path):
    with pytest.raises(UserError) as raised:
        find_toolchain(search_path="", debian_bin=tmp_path)
    assert "rustup target add wasm32-wasip1" in str(raised.value)
    assert "apt-get install" in str(raised.value)


def test_debian_rust_without_its_linker_names_the_package(tmp_path):
    # Debian's rustc and cargo, but not the lld-14 that their rust-lld link points at.
    for tool in ("rustc", "cargo"):
        (tmp_path / tool).symlink_to(Path("/usr/bin") / tool)
    (tmp_path / "rust-lld").symlink_to(tmp_path / "lld-14")
    with pytest.raises(UserError) as raised:
        find_toolchain(search_path="", debian_bin=tmp_path)
    assert "lld-14" in str(raised.value)


def test_unknown_formats_are_one_line_without_traceback():
    done = invoke("build", "--formats", "bogus")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "bogus" in done.stderr


@pytest.mark.parametrize("runs", ["0", "many", "2.5"])
def test_a_bad_bench_run_count_is_one_line_without_traceback(runs):
    done = invoke("bench", "--runs", runs)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "--runs" in done.stderr, done.stderr
    assert done.stdout == ""
