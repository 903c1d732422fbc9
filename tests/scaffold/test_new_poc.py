"""`invoke new`: a PoC that builds, runs, renders its Pod and passes its own tests; and safe generation."""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from testkit import ROOT, invoke
from wasmpod.errors import UserError
from wasmpod.scaffold import check_poc_name, new_poc, write_tree



@pytest.fixture(scope="module")
def poc(tmp_path_factory):
    dest = tmp_path_factory.mktemp("pocs") / "hello-poc"
    done = invoke("new", "hello-poc", "--dest", str(dest), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert str(dest) in done.stdout
    return dest


def test_new_poc_has_crate_tasks_config_readme_and_tests(poc):
    for relative in ("src/hello-poc/Cargo.toml", "src/hello-poc/src/lib.rs", "src/hello-poc/src/main.rs",
                     "tasks.py", "invoke.yaml", "README.md", "bootstrap.sh", "tests/test_poc.py",
                     "templates/k8s/pod.yaml.j2", "examples/input/hello.txt"):
        assert (poc / relative).is_file(), relative
    assert 'name = "hello-poc"' in (poc / "src/hello-poc/Cargo.toml").read_text()
    assert "toolchain_collection" in (poc / "tasks.py").read_text()  # reuses the library, no copy
    assert not list(poc.rglob("wasmpod"))
    config = yaml.safe_load((poc / "invoke.yaml").read_text())
    ours = yaml.safe_load((ROOT / "invoke.yaml").read_text())
    assert config["registry"]["repository"] == "hello-poc"
    assert config["deploy"]["name"] == "hello-poc"
    for key in ("input_dir", "output_dir", "create_pull_secret", "target", "runtime"):
        assert config["deploy"][key] == ours["deploy"][key]
    assert config["registry"]["address"] == ours["registry"]["address"]
    assert config["wasmpod"]["registry_dir"] == str(ROOT / "registry")
    assert os.access(poc / "bootstrap.sh", os.X_OK)


def test_new_poc_builds_and_its_module_processes_a_sample_with_once(poc, tmp_path):
    built = invoke("build", cwd=poc)
    assert built.returncode == 0, built.stderr
    module = Path(built.stdout.strip().splitlines()[-1])
    assert module.name == "hello-poc.wasm" and module.read_bytes()[:4] == b"\0asm"
    out = tmp_path / "out"
    ran = invoke("run", "--input", str(poc / "examples" / "input"), "--output", str(out), "--once", cwd=poc)
    assert ran.returncode == 0, ran.stderr
    summary = (out / "hello.txt.txt").read_text()
    data = (poc / "examples/input/hello.txt").read_bytes()
    assert summary.startswith(f"bytes: {len(data)}\nlines: 2\n")
    assert "wrote hello.txt.txt" in ran.stdout


def test_new_poc_renders_its_pod_for_another_registry(poc):
    done = invoke("deploy", "--dry-run", "--registry", "r.example.com", cwd=poc)
    assert done.returncode == 0, done.stderr
    pod = yaml.safe_load(done.stdout)
    container = pod["spec"]["containers"][0]
    assert container["image"] == "r.example.com/hello-poc:v0.1.0"
    assert container["args"] == ["hello-poc", "/input_dir", "/output_dir"]
    assert pod["metadata"]["name"] == "hello-poc"


def test_new_poc_chooses_its_runtime_like_fractalify(poc):
    done = invoke("deploy", "--dry-run", "--registry", "r.example.com", "--runtime", "runwasi", cwd=poc)
    assert done.returncode == 0, done.stderr
    pod = yaml.safe_load(done.stdout)
    assert pod["spec"]["runtimeClassName"] == "wasmtime-v1"
    assert pod["spec"]["containers"][0]["image"] == "r.example.com/hello-poc:v0.1.0-runwasi"
    assert pod["spec"]["containers"][0]["command"] == ["hello-poc.wasm"]


def test_new_poc_passes_its_own_tests(poc):
    done = subprocess.run(["bash", "bootstrap.sh", "test"], cwd=poc, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.parametrize("name", ["Hello", "1abc", "hello_poc", "-x", "x-", "a" * 64, "has space", "", "self", "poc"])
def test_invalid_names_are_refused_with_the_reason(name, tmp_path):
    with pytest.raises(UserError, match="name|reserved"):
        check_poc_name(name)
    done = invoke("new", name or "''", "--dest", str(tmp_path / "x"), cwd=ROOT)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_existing_directory_is_not_overwritten_without_force(tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    done = invoke("new", "hello-poc", "--dest", str(dest), cwd=ROOT)
    assert done.returncode != 0 and "--force" in done.stderr
    assert (dest / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    forced = invoke("new", "hello-poc", "--dest", str(dest), "--force", cwd=ROOT)
    assert forced.returncode == 0, forced.stderr
    assert not (dest / "precious.txt").exists() and (dest / "tasks.py").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_failed_generation_leaves_nothing_behind(tmp_path):
    class Unwritable:
        """Content that fails while the tree is being written, after some files are."""

        def __iter__(self):
            raise OSError("disk full")

    files = {Path("a.txt"): (b"first", 0o644), Path("b.txt"): (Unwritable(), 0o644)}
    with pytest.raises(Exception):
        write_tree(files, tmp_path / "poc", force=False)
    assert list(tmp_path.iterdir()) == []


def test_new_poc_library_call_refuses_bad_name_before_writing(tmp_path):
    with pytest.raises(UserError):
        new_poc(ROOT, "Bad", tmp_path / "bad", force=False)
    assert not (tmp_path / "bad").exists()
