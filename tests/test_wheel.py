"""The built wheel, installed into a fresh virtual environment, answers from an unrelated
directory: specs, database, known families, formats and model shapes come with it as
package data (qbayes.resources), not from a source tree.

How the environment is made: the wheel is built from a copy of the sources with
``pip wheel --no-deps`` (build isolation fetches setuptools through pip, from its cache or
PyPI), installed with ``--no-deps --no-index`` into a new venv, and that venv reaches the
heavy dependencies (PyMC, polars, ...) through a ``.pth`` file naming the site-packages of
the interpreter running the tests. A ``.pth`` line adds a folder to ``sys.path`` without
running that folder's own ``.pth`` files, so an editable qbayes installed there stays
inactive, and the venv's own site-packages (with the wheel) comes first. ``PYTHONPATH`` is
cleared, so nothing of the checkout is importable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from qbayes.resources import SHIPPED_FIT

from helpers import ROOT

SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "qbayes", "models", "data", "collectors")
# what the wheel must carry, by the checkout's folders (data/published/ is the import's source, not shipped)
SHIPPED = {"models": ("*.toml",), "data": ("*.parquet", "*.csv", "*.nc"), "collectors": ("*.toml",)}
NO_INDEX = (
    "Could not find a version that satisfies",
    "No matching distribution",
    "Failed to establish",
    "Network is unreachable",
    "Temporary failure in name resolution",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args, *, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "_resources", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", src], cwd=work)
    if built.returncode != 0 and any(s in built.stderr for s in NO_INDEX):
        pytest.skip(
            f"cannot build the wheel: its build backend (setuptools) is not in pip's cache and PyPI "
            f"is out of reach: {built.stderr.strip().splitlines()[-1]}"
        )
    assert built.returncode == 0, built.stderr
    (whl,) = (work / "dist").glob("qbayes-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("venv") / "env"
    made = _run([sys.executable, "-m", "venv", env], cwd=env.parent)
    assert made.returncode == 0, made.stderr
    python = env / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env.parent)
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(site.stdout.strip()) / "qbayes-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    installed = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel], cwd=env.parent)
    assert installed.returncode == 0, installed.stderr
    return env


def test_the_wheel_carries_the_shipped_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, patterns in SHIPPED.items():
        for pattern in patterns:
            for f in (ROOT / folder).glob(pattern):
                assert f"qbayes/_resources/{folder}/{f.name}" in names, f
    assert not any("/published/" in n for n in names)


def test_the_installed_package_reads_its_own_files(venv, tmp_path):
    check = (
        "import qbayes, qbayes.resources as r; "
        "print(qbayes.__file__); "
        "print(*(p() for p in (r.spec_dir, r.database_dir, r.known_families_csv, r.formats_csv, "
        "r.model_shapes_csv)), sep='\\n')"
    )
    r = _run([venv / "bin" / "python", "-c", check], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert Path(lines[0]).is_relative_to(venv), lines[0]
    for path in map(Path, lines[1:]):
        assert path.is_relative_to(venv) and "_resources" in path.parts and path.exists(), path


def test_commands_run_from_an_unrelated_directory(venv, tmp_path, small_fit_path):
    qbayes = venv / "bin" / "qbayes"
    r = _run([qbayes, "db", "summary"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "the shipped database" in r.stdout and "LLaMA-1" in r.stdout
    r = _run([qbayes, "db", "validate"], cwd=tmp_path)
    assert r.returncode == 0 and "valid (" in r.stdout, r.stderr
    # the shipped posterior answers when there is one (data/default-fit.nc); until then a fit file
    fit = [] if (ROOT / "data" / SHIPPED_FIT).is_file() else ["--fit", small_fit_path]
    r = _run(
        [
            qbayes,
            "predict",
            *fit,
            "--family",
            "Qwen2.5",
            "--params-b",
            7,
            "--format",
            "Q4_K_M",
            "--fp16-ppl",
            6.85,
            "--draws",
            100,
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "Q4_K_M (llama.cpp-kquant" in " ".join(r.stdout.split()) and "median degradation" in r.stdout
    r = _run(
        [qbayes, "predict", *fit, "--family", "Qwen2.5", "--params-b", 7, "--format", "Q4_K_W", "--fp16-ppl", 6.85],
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "unknown format 'Q4_K_W' (did you mean" in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran
