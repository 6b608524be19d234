"""A regular (non-editable) install finds models.toml and profiles/ and ships no top-level `tui`.

Builds a wheel from a clean copy of the source tree (so stale build/ folders of the
checkout cannot leak in), installs it with `pip install --target`, then imports it
in a fresh `python -S` whose sys.path is that folder plus this venv's site-packages
for the dependencies, so the editable install's import hook never runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# what the build needs: pyproject's packages and package data, and the files it names
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "localllm")

CHILD = r"""
import json, sys
site, deps = sys.argv[1], sys.argv[2]
sys.path[:] = [site] + [p for p in sys.path if p] + [deps]
import localllm, localllm.tui
from localllm import resources
from localllm.cli import main
out = {
    "file": localllm.__file__,
    "tui": localllm.tui.__file__,
    "profiles_dir": str(resources.profiles_dir()),
    "catalog": str(resources.catalog_path()),
    "catalog_exists": resources.catalog_path().is_file(),
    "profiles": localllm.list_profiles(),
    "container_limit": localllm.load_profile("container-4gib").memory.cgroup_limit,
    "editable_hook": any("editable" in type(f).__name__.lower() or "editable" in repr(f).lower()
                         for f in sys.meta_path),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, src / name)
    wheels, target = root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        pip + ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = wheels.glob("localllm-*.whl")
    subprocess.run(
        pip + ["install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@pytest.mark.slow
def test_wheel_install_finds_its_data(site):
    assert not (site / "tui").exists(), "tui/ must ship as localllm.tui, not top level"
    assert not (site / "localllm" / "_root").exists(), "data ships in localllm/data, not a mapped repository root"
    assert (site / "localllm" / "data" / "models.toml").is_file()
    assert (site / "localllm" / "tui" / "__init__.py").is_file()
    deps = sysconfig.get_paths()["purelib"]
    done = subprocess.run(
        [sys.executable, "-S", "-c", CHILD, str(site), deps], capture_output=True, text=True, cwd=site
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert not out["editable_hook"]
    assert Path(out["file"]).is_relative_to(site)
    assert Path(out["tui"]).is_relative_to(site / "localllm" / "tui")
    assert Path(out["profiles_dir"]).is_relative_to(site)
    expected = sorted(p.stem for p in (REPO / "localllm" / "data" / "profiles").glob("*.toml"))
    assert out["profiles"] == expected and len(expected) >= 10
    assert out["container_limit"] == 4 * 2**30
    assert out["catalog_exists"]
    assert Path(out["catalog"]).is_relative_to(site)
    assert Path(out["catalog"]).read_bytes() == (REPO / "localllm" / "data" / "models.toml").read_bytes()


def test_a_checkout_has_one_tui_package():
    """From the repository root, `localllm.tui` imports and a top-level `tui` does not (one module
    object per file: a second name for the same files gave two copies of every class)."""
    code = (
        "import importlib.util, json\n"
        "print(json.dumps([importlib.util.find_spec(n) is not None for n in ('tui', 'localllm.tui')]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, True]
