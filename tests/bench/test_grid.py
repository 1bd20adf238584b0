"""fedloom bench end to end on a real digits grid (2 algorithms x 2 seeds), plus grid validation."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from benchhelpers import cli
from fedloom.bench.grid import load_grid, plan
from fedloom.bench.runner import prepare
from fedloom.checkpoint import config_hash
from fedloom.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GRID = """
[grid]
name = "tiny"
seeds = [1, 2]
workers = 2

[base]
dataset = "digits"
model = "mlp"
clients = 4
rounds = 3
lr = 0.05
batch_size = 20
device = "cpu"
checkpoint_every = 1

[base.fedprox]
mu = 0.1

[axes]
algorithm = ["fedavg", "fedprox"]
"""


def write_grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def test_grid_runs_skips_retries_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grid, out = write_grid(tmp_path), tmp_path / "runs"
    runs = plan(load_grid(grid, out=str(out)))
    assert len(runs) == 4 and len({r.folder for r in runs}) == 4
    broken = runs[-1]
    prepare(broken)
    (broken.folder / "checkpoint.pt").write_bytes(b"not a checkpoint")  # this run must fail, alone

    code, _, err = cli(["bench", str(grid), "--out", str(out)], capsys)
    assert code == 1, err
    assert "3 ran" in err and "1 failed" in err and "corrupted" in err and broken.label in err
    assert sum((r.folder / "summary.json").is_file() for r in runs) == 3

    (broken.folder / "checkpoint.pt").unlink()
    code, _, err = cli(["bench", str(grid), "--out", str(out)], capsys)
    assert code == 0 and "1 ran, 3 skipped" in err
    assert all((r.folder / "summary.json").is_file() for r in runs)
    code, stdout, _ = cli(["bench", str(grid), "--out", str(out), "--dry-run"], capsys)
    assert code == 0 and stdout.count("complete ") == 4

    ref = tmp_path / "ref.csv"
    ref.write_text("dataset,partition,model,algorithm,accuracy,std,source\ndigits,dirichlet-0.1,,fedavg,50.0,,x\n")
    report, page = tmp_path / "report", tmp_path / "page.md"
    page.write_text("# Results\n<!-- tables:start -->\n<!-- tables:end -->\nprose\n")
    code, stdout, _ = cli(["report", str(out), "--out", str(report), "--reference", str(ref), "--into", str(page)],
                          capsys)
    assert code == 0 and "4 runs in 1 group" in stdout
    assert "### dirichlet-0.1\n\n| algorithm |" in page.read_text() and page.read_text().endswith("prose\n")
    html = (report / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4  # curves, cost (bytes and time), client boxes, partition
    assert "http" not in html and "<script" not in html  # self-contained
    for column in ["best acc. (%)", "final acc. (%)", "rounds to", "total bytes", "wall time", "published (%)",
                   "Δ best − published", "fedavg", "fedprox"]:
        assert column in html, column
    rows = list(csv.DictReader(open(report / "leaderboard.csv")))
    assert {r["algorithm"] for r in rows} == {"fedavg", "fedprox"} and all(r["seeds"] == "1 2" for r in rows)
    fedavg = next(r for r in rows if r["algorithm"] == "fedavg")
    assert fedavg["published"] == "50.0" and abs(float(fedavg["delta"]) - (float(fedavg["best_mean"]) - 50)) < 1e-3
    assert "| fedavg | — | 2 |" in (report / "report.md").read_text()
    assert len(list((report / "plots").glob("*.png"))) == 4 == len(list((report / "plots").glob("*.pdf")))


def test_unknown_algorithms_are_all_named_before_anything_runs(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    grid = write_grid(tmp_path, GRID.replace('["fedavg", "fedprox"]', '["fedavg", "nosuch", "fedfoo"]'))
    code, _, err = cli(["bench", str(grid), "--out", str(tmp_path / "runs")], capsys)
    assert code == 2 and "unknown algorithm(s) nosuch, fedfoo" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_bad_options_and_typo_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fedprx"):
        plan(load_grid(write_grid(tmp_path, GRID.replace("[base.fedprox]", "[base.fedprx]"))))
    with pytest.raises(ConfigError, match=r"run \(algorithm=fedprox.*fedprox\.nu"):
        plan(load_grid(write_grid(tmp_path, GRID.replace("mu = 0.1", "nu = 0.1"))))
    with pytest.raises(ConfigError, match="lr"):
        plan(load_grid(write_grid(tmp_path, GRID.replace("lr = 0.05", "lr = -1.0"))))


def test_option_axes_multiply_only_their_algorithm_and_hash_ignores_execution(tmp_path: Path) -> None:
    text = GRID + '"fedprox.mu" = [0.1, 0.2]\nsetting = [{partition = "iid"}, {partition = "pathological", ' \
                  'classes_per_client = 3}]\n'
    runs = plan(load_grid(write_grid(tmp_path, text)))
    per_seed = [r for r in runs if r.config.seed == 1]
    assert len(per_seed) == 2 * (1 + 2)  # 2 settings x (fedavg once + fedprox for each mu)
    assert sorted(r.config.options["fedprox"]["mu"] for r in per_seed if r.config.algorithm == "fedprox") == \
        [0.1, 0.1, 0.2, 0.2]
    cfg = runs[0].config
    moved = dataclasses.replace(cfg, out="elsewhere", quiet=False, threads=7, checkpoint_every=0)
    assert config_hash(moved) == runs[0].hash
    assert config_hash(dataclasses.replace(cfg, lr=0.5)) != runs[0].hash
    again = plan(load_grid(write_grid(tmp_path, text), out="other-root"))
    assert [r.hash for r in again] == [r.hash for r in runs]


def test_shipped_fmnist_grid_validates_or_names_the_missing_algorithms() -> None:
    from fedloom.algorithms import ALGORITHMS

    spec = load_grid(REPO / "benchmarks" / "grids" / "fmnist-pfl.toml")
    wanted = spec.axes["algorithm"]
    missing = [a for a in wanted if a not in ALGORITHMS]
    if missing:
        with pytest.raises(ConfigError) as info:
            plan(spec)
        assert f"unknown algorithm(s) {', '.join(missing)} " in str(info.value)
        return
    runs = plan(spec)
    assert len(runs) == len(wanted) * 2 * 3
    assert {(r.config.partition, r.config.clients, r.config.batch_size, r.config.lr) for r in runs} == \
        {("dirichlet", 20, 10, 0.005), ("pathological", 20, 10, 0.005)}


def test_shipped_reference_covers_the_pfllib_leaderboard() -> None:
    from fedloom.bench.leaderboard import load_reference

    rows = load_reference(REPO / "benchmarks" / "reference" / "pfllib-leaderboard.csv")
    settings = {(r["dataset"], r["partition"]) for r in rows}
    for dataset, pathological in [("fashion-mnist", 2), ("cifar100", 10), ("tiny-imagenet", 20)]:
        assert (dataset, f"pathological-{pathological}") in settings and (dataset, "dirichlet-0.1") in settings
    assert ("ag-news", "dirichlet-0.1") in settings
    fedavg = [r for r in rows if r["algorithm"] == "fedavg" and r["dataset"] == "cifar100"
              and r["partition"] == "dirichlet-0.1"]
    assert fedavg[0]["accuracy"] == "31.89" and fedavg[0]["std"] == "0.47"


def test_engine_tables_configure_the_runs_that_use_that_engine(tmp_path: Path) -> None:
    """``[base.processes]`` is an option table like an algorithm's: it configures the runs on that engine and is
    dropped from the others (so the serial runs of the grid are not refused for an unused engine table)."""
    text = GRID.replace("[base.fedprox]", "[base.processes]\nworkers = 3\n\n[base.fedprox]") + \
        'engine = ["serial", "processes"]\n'
    runs = plan(load_grid(write_grid(tmp_path, text)))
    on_processes = [r.config for r in runs if r.config.engine == "processes"]
    assert on_processes and all(cfg.workers == 3 for cfg in on_processes)
    assert all("processes" not in r.config.options for r in runs)
    with pytest.raises(ConfigError, match="proceses"):
        plan(load_grid(write_grid(tmp_path, text.replace("[base.processes]", "[base.proceses]"))))


def test_a_published_feddistill_row_is_fedlooms_fd() -> None:
    """PFLlib's leaderboard says FedDistill; fedloom registers the method as fd, so the reference attaches."""
    from fedloom.bench.collect import Group
    from fedloom.bench.leaderboard import Row, attach_reference, load_reference

    reference = load_reference(REPO / "benchmarks" / "reference" / "pfllib-leaderboard.csv")
    rows = [Row(label=name, algorithm=name, model="cnn", seeds=[1], best=(96.0, 0.0), final=(96.0, 0.0),
                rounds_to_target=None, reached=0, total_bytes=0.0, wall_seconds=0.0) for name in ("fd", "fedproto")]
    attach_reference(rows, Group(dataset="fashion-mnist", partition="dirichlet-0.1"), reference)
    assert [row.published for row in rows] == [97.43, 97.40]
