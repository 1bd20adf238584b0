"""The researcher's-day features work from an installed wheel, not only from a checkout: the wheel is built,
installed into a fresh target folder that shadows the editable install, and exercised from a folder that is not
the checkout (so benchmarks/ and src/ cannot be reached by accident)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PLUGIN = '''
from dataclasses import dataclass
from fedloom.algorithms import ALGORITHMS
from fedloom.algorithms.fedavg import FedAvg

@ALGORITHMS.register("wheel-plugin-avg")
@dataclass(frozen=True)
class WheelPluginAvg(FedAvg):
    """FedAvg under another name, registered from a --import file."""
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(REPO)], check=True, cwd=root)
    wheel = next((root / "dist").glob("fedloom-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(root / "site"),
                    str(wheel)], check=True, cwd=root)
    return root


def fedloom(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "site"), "OMP_NUM_THREADS": "1"}
    code = "import sys; from fedloom.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_the_wheel_is_what_runs(installed: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed / "site")}
    where = subprocess.run([sys.executable, "-c", "import fedloom; print(fedloom.__file__)"], cwd=installed,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(installed / "site"))


@pytest.mark.slow
def test_run_with_provenance_and_a_plugin_from_the_wheel(installed: Path) -> None:
    (installed / "myplugin.py").write_text(textwrap.dedent(PLUGIN))
    out = installed / "runs" / "p"
    done = fedloom(installed, "run", "--import", "myplugin.py", "--algorithm", "wheel-plugin-avg", "--dataset",
                   "digits", "--model", "logreg", "--clients", "4", "--rounds", "2", "--seed", "1", "--quiet",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert "fedloom" in json.dumps(summary) and "torch" in json.dumps(summary)
    assert oct((out / "config.toml").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


@pytest.mark.slow
def test_packaged_grid_and_license_in_the_wheel(installed: Path) -> None:
    listed = fedloom(installed, "list")
    assert listed.returncode == 0 and "fedavg" in listed.stdout
    grid = fedloom(installed, "bench", "benchmarks/grids/fmnist-pfl.toml", "--dry-run", "--no-calibrate")
    assert "not found" not in (grid.stdout + grid.stderr).lower(), grid.stderr
    dist_info = next((installed / "site").glob("fedloom-*.dist-info"))
    assert any("LICENSE" in p.name for p in dist_info.rglob("*"))
    shipped = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src").rglob("*")
               if p.is_file() and p.suffix not in {".py", ".pyc"} and "egg-info" not in str(p)}
    missing = [path for path in shipped if not (installed / "site" / path).is_file()]
    assert not missing, f"data files of the package missing from the wheel: {missing}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
