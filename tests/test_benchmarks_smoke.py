"""`mdplugin bench speed|speed-local --quick` and `bench accuracy --compare` run end to end and write well-formed results.

A smoke test of the pipeline, not a measurement: timings here are never asserted beyond being positive.
"""

from __future__ import annotations

import json
import math

import ase.io
import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from mdplugin.cli.main import main

ENGINES = "raw,openmm-cpu,lammps-1,mace"  # the others run the same code paths


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_speed_quick_writes_json_markdown_and_plot(tmp_path):
    arguments = ["bench", "speed", "--quick", "--model", str(FIXTURES / "tiny-float32.pt"), "--sizes", "9,30"]
    arguments += ["--repeats", "2", "--engines", ENGINES, "-o", str(tmp_path)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.md").read_text().startswith("# Speed")
    assert (tmp_path / "speed.png").stat().st_size > 0

    assert {"machine", "model", "settings", "matmul_gflops", "mace", "skipped", "rows", "scaling"} <= set(results)
    assert {"cpu", "logical_cores", "torch_threads", "versions", "date"} <= set(results["machine"])
    assert positive(results["matmul_gflops"])
    assert [row["target_atoms"] for row in results["rows"]] == [9, 30]
    for row in results["rows"]:
        assert positive(row["atoms"]) and not row["errors"], row["errors"]
        for name in ENGINES.split(","):
            if name in results["skipped"]:  # e.g. LAMMPS when the plugin is not built: the reason is recorded
                assert results["skipped"][name]
                continue
            entry = row["engines"][name]
            assert all(positive(entry[key]) for key in ("ms_per_step", "steps_per_s", "ns_per_day", "relative_to_raw"))
        assert positive(row["flops"]["gflop"]) and positive(row["flops"]["efficiency"])
        assert positive(row["memory"]["peak_rss_mb"])
    assert results["scaling"]["raw"]["exponent_all"] is not None


def test_bench_speed_local_quick_measures_a_periodic_water_box(tmp_path):
    arguments = ["bench", "speed-local", "--quick", "--edges", "3", "--repeats", "2", "-o", str(tmp_path)]
    arguments += [
        "--model",
        str(FIXTURES / "tiny-local-float32.pt"),
        "--global-model",
        str(FIXTURES / "tiny-float32.pt"),
    ]
    arguments += ["--engines", "local,global,openmm-cpu"]  # MACE runs the same timing code as in `bench speed`
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "speed-local.json").read_text())
    assert (tmp_path / "speed-local.md").read_text().startswith("# Periodic water")
    assert (tmp_path / "speed-local.png").stat().st_size > 0
    (row,) = results["rows"]
    assert row["atoms"] == 81 and not row["errors"], row["errors"]
    # liquid density, and no two molecules overlapping: the box is built, not random positions
    assert abs(row["density_g_per_cm3"] - 1.0) < 0.01
    assert row["closest_intermolecular_angstrom"] >= 1.5
    for name in ("local", "global", "openmm-cpu"):
        assert positive(row["engines"][name]["ms_per_step"]) and positive(row["engines"][name]["ms_per_atom"])
    assert positive(row["memory"]["local"]["peak_rss_mb"])
    assert "crossover" in results["summary"]["wall"] and "crossover" in results["summary"]["cpu"]
    assert positive(row["engines"]["local"]["cpu_ms_per_atom"])


def run_comparison(tmp_path, test_data, compare: list[str]) -> dict:
    from benchmarks.accuracy import parse_comparison

    assert [label for label, _ in parse_comparison(compare)] == [item.split("=")[0] for item in compare]
    arguments = ["bench", "accuracy", "--test-data", str(test_data), "-o", str(tmp_path), "--report-name", "compare"]
    arguments += [item for value in compare for item in ("--compare", value)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "compare.json").read_text())
    (row,) = report["rows"]
    assert set(row["models"]) == {item.split("=")[0] for item in compare}
    assert all(positive(model["force_mae_mev_per_a"]) for model in row["models"].values())
    return report


def test_accuracy_compare_puts_global_and_local_side_by_side(tmp_path, toy_data):
    train = tmp_path / "train.extxyz"
    ase.io.write(train, ase.io.read(toy_data, index=":20"), format="extxyz")
    compare = [f"global={FIXTURES / 'tiny.pt'}", f"local={FIXTURES / 'tiny-local.pt'}"]
    report = run_comparison(tmp_path, train, compare)
    assert report["target"] == {"local": "local", "mace": None, "ratios": [], "met": None}


def test_accuracy_compare_puts_a_trained_mace_beside_transformers(tmp_path, toy_data):
    pytest.importorskip("mace", reason="MACE comes with the bench extra: pip install -e '.[bench]'")
    from benchmarks import mace_train

    train = tmp_path / "train.extxyz"
    ase.io.write(train, ase.io.read(toy_data, index=":20"), format="extxyz")
    summary = mace_train.train_mace([train], [train], tmp_path / "mace", minutes=0.02, eval_every_s=1e9)
    assert summary["steps"] >= 1 and positive(summary["training_time_s"]) and positive(summary["cpu_time_s"])
    compare = [
        f"global={FIXTURES / 'tiny.pt'}",
        f"local={FIXTURES / 'tiny-local.pt'}",
        f"MACE={tmp_path / 'mace/mace.pt'}",
    ]
    report = run_comparison(tmp_path, train, compare)
    assert report["target"]["local"] == "local" and report["target"]["mace"] == "MACE"
    assert positive(report["target"]["largest_ratio"])
    assert "Target" in (tmp_path / "compare.md").read_text()


def test_water_dipole_and_molecular_errors_refuse_what_is_not_whole_water():
    import numpy as np
    from ase import Atoms

    from benchmarks.water import molecular_errors
    from benchmarks.water_dipole import box_dipole

    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], cell=[5, 5, 5], pbc=True)
    wrapped = water.copy()
    wrapped.positions[1] += [5, 0, 0]  # a hydrogen across the box face: the same molecule
    assert abs(box_dipole(wrapped) - box_dipole(water)) < 1e-12
    forces = np.array([[0.0, 0, 0], [0.1, 0, 0], [0, 0.2, 0]])
    errors = molecular_errors(water, forces, np.zeros((3, 3)))
    assert abs(errors["molecule_force_mae_meV_per_A"] - 100.0) < 1e-9  # |(0.1, 0.2, 0)| summed, per component
    for bad, message in [
        (Atoms("H2O", positions=water.positions, cell=[5, 5, 5], pbc=True), "O, H, H order"),
        (Atoms(cell=[5, 5, 5], pbc=True), "O, H, H order"),
        (Atoms("OH2", positions=[[0, 0, math.nan], [1, 0, 0], [0, 1, 0]]), "NaN"),
        (Atoms("OH2", positions=water.positions, cell=[5, 5, 5], pbc=[True, True, False]), "some axes only"),
    ]:
        with pytest.raises(ValueError, match=message):
            box_dipole(bad)


def test_training_curves_refuses_a_file_that_is_not_a_training_log(tmp_path):
    from benchmarks.training_curves import read_log

    (tmp_path / "other.csv").write_text("time,density\n0,1\n")
    with pytest.raises(SystemExit, match="not a training log"):
        read_log(tmp_path / "other.csv")


def test_gpu_report_tables_measurements_and_names_failures(tmp_path):
    from argparse import Namespace

    from benchmarks.gpu.gpu import report

    results = {
        "machine": {"gpu": "test card", "torch": "2.x"},
        "lammps": {"rows": [{"device": "cuda", "ms_per_step": 8.7412}, {"device": "cpu", "failed": "no|plugin"}]},
        "openmm": {"failed": "ImportError: no openmmtorch"},
    }
    (tmp_path / "gpu.json").write_text(json.dumps(results))
    report(Namespace(json=str(tmp_path / "gpu.json"), markdown=str(tmp_path / "gpu.md")))
    text = (tmp_path / "gpu.md").read_text()
    assert "gpu test card" in text
    assert "| device | ms_per_step | failed |" in text and "| cuda | 8.741 |  |" in text
    assert "no/plugin" in text  # a cell never breaks the table
    assert "Failed: `ImportError: no openmmtorch`" in text


def test_gpu_results_that_are_not_measurements_are_refused_by_name(tmp_path):
    from benchmarks.gpu.gpu import read_results

    for content, message in [("{not json", "is not the JSON this script writes"), ("[1, 2]", "not an object")]:
        (tmp_path / "gpu.json").write_text(content)
        with pytest.raises(SystemExit, match=message):
            read_results(tmp_path / "gpu.json")
    with pytest.raises(SystemExit, match="does not exist; run a measurement"):
        read_results(tmp_path / "missing.json")


def test_pooled_densities_group_runs_by_the_model_they_recorded():
    from benchmarks.water import pooled_densities

    def run(name, engine, density, digest, failed=False):
        record = {"potential_sha256": digest, "npt": {"ran_ps": 10.0}}
        result = {"name": name, "potential": "model.pt", "density_g_cm3": density, "run": record}
        if engine == "lammps":
            result["engine"] = "lammps"
        if failed:
            result["analysed_before_failure_ps"] = 1.0
        return result

    runs = [
        run("a", "openmm", 1.00, "aa" * 32),
        run("b", "openmm", 0.98, "aa" * 32),
        run("c", "lammps", 0.97, "aa" * 32),
        run("d", "openmm", 0.50, "aa" * 32, failed=True),  # a blown-up run is no density sample
        run("e", "openmm", 0.90, "bb" * 32),  # another model: never pooled with the first
    ]
    pooled = {(p["model_sha256"], p["engine"]): p for p in pooled_densities(runs)}
    assert set(pooled) == {("aa" * 6, "openmm"), ("aa" * 6, "both")}  # one LAMMPS run and model bb: no pool
    assert pooled[("aa" * 6, "openmm")]["runs"] == ["a", "b"]
    assert abs(pooled[("aa" * 6, "openmm")]["density_g_cm3"] - 0.99) < 1e-12
    assert abs(pooled[("aa" * 6, "openmm")]["standard_error"] - 0.01) < 1e-12
    assert pooled[("aa" * 6, "both")]["runs"] == ["a", "b", "c"]


def test_water_md_refuses_an_unknown_platform_without_a_traceback(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    command = [sys.executable, "benchmarks/water.py", "md", "classical", "--name", "never-written"]
    done = subprocess.run([*command, "--platform", "Banana"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "water.py md: OpenMM platform 'Banana' is not available here" in done.stderr
    assert not (ROOT / "runs" / "water" / "never-written").exists()


def test_bench_scaling_quick_fits_and_resumes(tmp_path):
    """A 3 x 3 grid of tiny runs (20 steps each) on EMT-labelled toy molecules: every run recorded, power laws
    and the joint fit written, and a second call trains nothing again."""
    from conftest import write_toy_data

    train = write_toy_data(tmp_path / "train.extxyz", frames=40, seed=1)
    test = write_toy_data(tmp_path / "test.extxyz", frames=12, seed=2)
    arguments = ["bench", "scaling", "--quick", "--train-data", str(train), "--test-data", str(test), "--steps", "20",
                 "--threads", "1", "--jobs", "2", "-o", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert len(results["runs"]) == 9 and all(positive(r["test_force_mae_mev_per_a"]) for r in results["runs"])
    assert {r["frames"] for r in results["runs"]} == {8, 16, 32}
    assert results["fit_parameters"]["points"] == 3 and results["fit_data"]["points"] == 3
    assert {"determined"} <= set(results["joint_fit"]) or {"failed"} == set(results["joint_fit"])  # 9 toy runs
    assert math.isfinite(results["loglinear_fit"]["alpha"]) and math.isfinite(results["loglinear_fit"]["beta"])
    assert (tmp_path / "out" / "scaling.md").read_text().startswith("# Scaling")
    assert (tmp_path / "out" / "scaling.png").stat().st_size > 0
    recorded = sorted((tmp_path / "out" / "runs").glob("*/result.json"))
    stamps = [path.stat().st_mtime_ns for path in recorded]
    assert CliRunner().invoke(main, arguments).exit_code == 0
    assert [path.stat().st_mtime_ns for path in recorded] == stamps  # nothing retrained
    refused = CliRunner().invoke(main, [*arguments[:-2], "--data-sizes", "8,1000", "-o", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "the largest --data-sizes is 1000" in refused.output


def test_bench_scaling_puts_a_mace_anchor_beside_the_grid(tmp_path):
    """MACE at two sizes on one data size of a tiny grid: trained for the same steps, reported and plotted."""
    pytest.importorskip("mace", reason="MACE comes with the bench extra: pip install -e '.[bench]'")
    from conftest import write_toy_data

    train = write_toy_data(tmp_path / "train.extxyz", frames=16, seed=1)
    test = write_toy_data(tmp_path / "test.extxyz", frames=4, seed=2)
    arguments = ["bench", "scaling", "--train-data", str(train), "--test-data", str(test), "--steps", "3",
                 "--model-sizes", "8x1,16x1,16x2", "--data-sizes", "4,8,16", "--mace-sizes", "2,4",
                 "--mace-data-sizes", "16", "--threads", "1", "-o", str(tmp_path / "out")]  # fmt: skip
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert [(r["size"], r["frames"], r["steps"]) for r in results["mace_runs"]] == [
        ("MACE 2ch", 16, 3),
        ("MACE 4ch", 16, 3),
    ]
    assert results["mace_runs"][0]["parameters"] < results["mace_runs"][1]["parameters"]
    assert "## Anchor: MACE on the same data" in (tmp_path / "out" / "scaling.md").read_text()
    refused = CliRunner().invoke(main, [*arguments[:-2], "--mace-data-sizes", "5", "-o", str(tmp_path / "x")])
    assert refused.exit_code != 0 and "must be among --data-sizes" in refused.output
