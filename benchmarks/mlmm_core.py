"""The shipped dipeptide's ML/MM run without and with the repulsive core (`mdplugin export --repulsion zbl`).

Both runs are `benchmarks.mlmm`'s ML/MM run (dipeptide in TIP3P, PME, NPT, 300 K, same start and seed), one with
the shipped export and one with the same checkpoint exported with the core. Reported side by side: the closest
non-bonded heavy-atom distance (below 2 Å the molecule has collapsed), phi/psi basin populations, density,
temperature and speed.

    python -m benchmarks.mlmm_core [--checkpoint examples/models/dipeptide.pt] [--duration-ps 20] [--reuse]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
from pathlib import Path

import numpy as np

from benchmarks import mlmm, report

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "examples" / "models" / "dipeptide.pt")
    parser.add_argument("--duration-ps", type=float, default=20.0)
    parser.add_argument("--runs", type=Path, default=Path("runs/mlmm-core"))
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs of the same length in --runs")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "benchmarks" / "results" / "mlmm")
    arguments = parser.parse_args(argv)
    from mdplugin.export.exporter import export

    arguments.runs.mkdir(parents=True, exist_ok=True)
    models = {
        "bare": export(arguments.checkpoint, arguments.runs / "bare-export.pt", overwrite=True),
        "core": export(arguments.checkpoint, arguments.runs / "core-export.pt", overwrite=True, repulsion="zbl"),
    }
    machine = report.machine_info()
    runs = {}
    for name, model in models.items():
        command = ["--model", str(model), "--duration-ps", str(arguments.duration_ps), "--only", "ML/MM"]
        command += ["--runs", str(arguments.runs / name), "--openmm-threads", "1"] + (
            ["--reuse"] if arguments.reuse else []
        )
        run = mlmm.main(command)["runs"]["ML/MM"]
        runs[name] = {
            "ns_per_day": run["ns_per_day"],
            "basin_populations": run["basin_populations"],
            "closest_contact_median_A": float(run["closest_contact_median_angstrom"]),
            "closest_contact_min_A": float(np.min(run["closest_nonbonded_heavy_atoms_angstrom"])),
            "frames_below_2_A": float(run["frames_with_contact_below_2_angstrom"]),
            "density_g_per_ml": float(run["density_g_per_ml"]),
            "temperature_k": float(run["temperature_k"]),
            "cores_busy_after": run["machine"]["busy_cores_end"],
        }
    data = {"duration_ps": arguments.duration_ps, "checkpoint": str(arguments.checkpoint), "runs": runs}
    data["machine"] = report.finish(machine)
    report.write_json(data, arguments.output / "core.json")
    basins = list(runs["bare"]["basin_populations"])
    rows = [
        [
            name,
            f"{run['closest_contact_median_A']:.2f}",
            f"{run['closest_contact_min_A']:.2f}",
            f"{100 * run['frames_below_2_A']:.0f}%",
            *[f"{100 * run['basin_populations'][basin]:.0f}%" for basin in basins],
            f"{run['density_g_per_ml']:.3f}",
            f"{run['temperature_k']:.0f}",
            f"{run['ns_per_day']:.1f}",
        ]
        for name, run in runs.items()
    ]
    header = ["export", "closest heavy atoms, median Å", "min Å", "frames < 2 Å", *basins, "density", "T (K)", "ns/day"]
    text = (
        f"# ML/MM dipeptide without and with the repulsive core\n\n{arguments.duration_ps:g} ps of `benchmarks.mlmm`'s "
        f"ML/MM run (TIP3P, PME, NPT, 300 K) with `{arguments.checkpoint.name}` exported bare and with "
        "`--repulsion zbl`; last 90% of each run. The all-MM reference of the same box sits in alpha_R 99.6% "
        "(`README.md`).\n\n"
        + report.markdown_table(header, rows)
        + "\n\n"
        + report.machine_markdown(data["machine"])
        + "\n"
    )
    (arguments.output / "core.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
