"""A projection on paper for many MPI ranks and GPUs: what domain decomposition costs a local model.

A rank that owns a cubic subdomain of edge s evaluates its atoms from their neighbourhoods. Three
designs, for a model of interaction range R, depth d (receptive field d R) and width w, with a
neighbour skin k, in liquid water (0.1003 atoms/Å^3):

- **ghost shell** (the first `pair_style transformer`, before per-layer trimming): ghosts out to G = d R + k;
  every block updates every atom the rank holds, (s + 2G)^3 / s^3 times the owned atoms.
- **ghost shell, trimmed** (`forward_neighbors`; `pair_style transformer exchange no`): the same ghosts, but block l updates only
  the atoms within d - 1 - l neighbour hops of the owned atoms; the last block updates the owned
  atoms alone. Communication is unchanged: positions out, forces back, once per step.
- **per-layer exchange** (`pair_style transformer` on several ranks since export version 3, which
  exchanges each block's keys and values, 2 w numbers; DeePMD's `border_op`, LAMMPS ML-IAP's
  `forward_exchange`):
  ghosts out to R + k only; every block updates the owned atoms, then the ghosts' new keys and
  values come from their owners, and in the backward pass their gradients go back: d - 1
  exchanges each way per step on top of positions and forces.

Small subdomains are counted on a real configuration (a water box cropped to the subdomain and its
shell; hops from a neighbour graph of the pairs closer than R, as `forward_neighbors` counts them);
all sizes also from the geometric formulas (a hop reaches at most R), which the counts check.
Communication is bytes per rank per MD step: float64 positions and forces (24 B each way per
ghost), float64 keys and values (16 w B per ghost per exchange, LAMMPS's buffers). Messages: LAMMPS's brick exchange sends
one message per direction per dimension and per subdomain width the ghost range spans.

    python -m benchmarks.lammps_projection [--model examples/models/water-xtb-export.pt]
                                           [--range 3.0 --depth 4 --width 64] [--skin 1.0]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import math
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.spatial import cKDTree

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
WATER_DENSITY = 0.1003  # atoms / Å^3 at 1.00 g/cm^3
POSITION_BYTES = 3 * 8  # float64 x, y, z out to the ghost; the same back as its force
FEATURE_BYTES = 8  # per number: the pair style exchanges keys, values and their gradients in LAMMPS's float64 buffers
LATENCY_S = 5e-6  # per MPI message between nodes (InfiniBand-class 1-2 us; 5 us leaves room for software)
SECONDS_PER_BYTE = 1e-10  # 10 GB/s per rank
ATOMS_PER_RANK = [100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000]
COUNTED_ATOMS_PER_RANK = [300, 1_000, 3_000]  # counted on a configuration (the padded box grows fast)


def model_parameters(path: Path) -> dict:
    """Range, depth and width of a local model file (export or checkpoint)."""
    from mdplugin.export.model_file import open_model

    model = open_model(path)
    if not model.is_local:
        raise SystemExit(f"{path} is not a local model (it has global attention)")
    config = model.export_metadata()["model_config"]
    return {"range": float(model.info.interaction_range), "depth": int(config["depth"]), "width": int(config["width"])}


# ---------------------------------------------------------------- geometry


def shell_atoms(edge: float, reach: float) -> float:
    """Atoms within `reach` of a cubic subdomain of edge `edge` (LAMMPS's brick: the padded cube), owned excluded."""
    return WATER_DENSITY * ((edge + 2 * reach) ** 3 - edge**3)


def exchanges(edge: float, reach: float) -> int:
    """Messages for one forward (or reverse) communication: two directions x three dimensions x the
    number of subdomain widths the ghost range spans (LAMMPS's multi-hop brick exchange)."""
    return 6 * max(1, math.ceil(reach / edge))


def by_formula(
    atoms: int, interaction_range: float, depth: int, width: int, skin: float, hop_reach: float | None = None
) -> dict:
    """Per-rank counts from the geometry. Block l updates the atoms within depth - 1 - l hops: at most
    (depth - 1 - l) R from the owned ones, or (depth - 1 - l) x `hop_reach` with the reach counted."""
    edge = (atoms / WATER_DENSITY) ** (1 / 3)
    ghost_range = depth * interaction_range + skin
    ghosts = shell_atoms(edge, ghost_range)
    held = atoms + ghosts

    def trimmed(reach: float) -> float:
        return sum(atoms + shell_atoms(edge, (depth - 1 - layer) * reach) for layer in range(depth)) / (depth * atoms)

    exchange_ghosts = shell_atoms(edge, interaction_range + skin)
    return {
        "atoms_per_rank": atoms,
        "edge_A": edge,
        "shell": {
            "ghost_range_A": ghost_range,
            "ghosts_per_owned": ghosts / atoms,
            "updates_per_owned_atom_block": depth * held / (depth * atoms),
            "trimmed_updates_per_owned_atom_block": trimmed(interaction_range),
            "trimmed_updates_per_owned_atom_block_counted_reach": trimmed(hop_reach) if hop_reach else None,
            "bytes_per_step": 2 * POSITION_BYTES * ghosts,
            "messages_per_step": 2 * exchanges(edge, ghost_range),
        },
        "exchange": {
            "ghost_range_A": interaction_range + skin,
            "ghosts_per_owned": exchange_ghosts / atoms,
            "updates_per_owned_atom_block": 1.0,
            # keys and values: 2 width numbers per ghost, d - 1 times each way
            "bytes_per_step": (2 * POSITION_BYTES + 2 * (depth - 1) * FEATURE_BYTES * 2 * width) * exchange_ghosts,
            "messages_per_step": 2 * depth * exchanges(edge, interaction_range + skin),
        },
    }


def measured_costs(paths: Path, depth: int) -> dict:
    """The time of one atom-block update (forward and backward) and the exchange path's cost per ghost in
    owned-atom steps, from `lammps_scaling.json` (`python -m benchmarks.lammps_scaling --shipped MODEL`) on its
    largest box: one rank's periodic forward, and two ranks block by block against half of one rank block by
    block (what the slowest rank spent beyond its share, per ghost it held: packing, messages, waiting)."""
    size = json.loads(paths.read_text())["sizes"][-1]
    by_name = {entry["name"]: entry for entry in size["runs"]}
    periodic = by_name["1 rank, periodic forward (auto)"]
    one, two = by_name["1 rank, block by block"], by_name["2 ranks, block by block (auto)"]
    update = periodic["pair_seconds_per_step_slowest_rank"] / (periodic["atoms"] * depth)
    extra = two["pair_seconds_per_step_slowest_rank"] - one["pair_seconds_per_step_slowest_rank"] / 2
    return {
        "update_s": update,
        "exchange_ghost_cost": max(0.0, extra) / two["ghost_atoms_per_rank"] / (update * depth),
        "source": f"{paths.name}: {periodic['atoms']} atoms, one rank and two",
    }


def efficiencies(row: dict, depth: int, cost: dict) -> dict:
    """Projected parallel efficiency per rank: the owned atoms' own work over the rank's time per step
    (redundant updates, the exchange path's per-ghost work, LATENCY_S per message, SECONDS_PER_BYTE)."""
    owned_work = cost["update_s"] * depth * row["atoms_per_rank"]

    def efficiency(updates_per_owned: float, messages: int, size: float) -> float:
        return owned_work / (owned_work * updates_per_owned + messages * LATENCY_S + size * SECONDS_PER_BYTE)

    shell, exchange = row["shell"], row["exchange"]
    trimmed = (
        shell["trimmed_updates_per_owned_atom_block_counted_reach"] or shell["trimmed_updates_per_owned_atom_block"]
    )
    ghost_work = cost["exchange_ghost_cost"] * exchange["ghosts_per_owned"]  # in owned atoms' full steps
    return {
        "shell_trimmed": efficiency(trimmed, shell["messages_per_step"], shell["bytes_per_step"]),
        "exchange": efficiency(1.0 + ghost_work, exchange["messages_per_step"], exchange["bytes_per_step"]),
    }


# ---------------------------------------------------------------- counted on a configuration


def water_positions(length: float, seed: int = 0, spacing: float = 3.1) -> np.ndarray:
    """Randomly oriented water molecules on a cubic grid filling [0, length)^3 (about liquid density)."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(104.52)
    molecule = np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [0.9572 * np.cos(angle), 0.9572 * np.sin(angle), 0.0]])
    sites = np.arange(math.ceil(length / spacing)) * spacing
    grid = np.stack(np.meshgrid(sites, sites, sites, indexing="ij"), axis=-1).reshape(-1, 3)
    rotations = np.linalg.qr(rng.normal(size=(len(grid), 3, 3)))[0]
    positions = (
        grid[:, None, :] + np.einsum("mij,aj->mai", rotations, molecule) + rng.normal(0.0, 0.05, (len(grid), 1, 3))
    )
    positions = positions.reshape(-1, 3)
    return positions[np.all((positions >= 0) & (positions < length), axis=1)]


def counted(atoms: int, interaction_range: float, depth: int, skin: float) -> dict:
    """Owned atoms, ghosts and per-block updates on a water configuration: the subdomain is the centre
    cube of edge s of a box of edge s + 2 G, the neighbour graph the pairs closer than R."""
    edge = (atoms / WATER_DENSITY) ** (1 / 3)
    ghost_range = depth * interaction_range + skin
    positions = water_positions(edge + 2 * ghost_range) - ghost_range
    owned = np.all((positions >= 0) & (positions < edge), axis=1)
    pairs = cKDTree(positions).query_pairs(interaction_range, output_type="ndarray")
    graph = coo_matrix(
        (np.ones(2 * len(pairs), dtype=bool), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
        shape=(len(positions), len(positions)),
    ).tocsr()
    within = owned.copy()  # atoms within h hops of an owned atom, h = 0, 1, ...
    reached = [int(within.sum())]
    for _ in range(depth - 1):
        within = within | (graph @ within.astype(np.int8) > 0)
        reached.append(int(within.sum()))
    exchange_shell = np.all(
        (positions >= -interaction_range - skin) & (positions < edge + interaction_range + skin), axis=1
    )
    n_owned = int(owned.sum())
    density = len(positions) / (edge + 2 * ghost_range) ** 3
    # how far h hops reach, as the shell that holds the atoms within h hops: per hop, in Å
    reach = [((count / density) ** (1 / 3) - edge) / (2 * hops) for hops, count in enumerate(reached) if hops > 0]
    return {
        "atoms_per_rank": n_owned,
        "edge_A": edge,
        "ghosts_per_owned": (len(positions) - n_owned) / n_owned,
        "atoms_within_hops": reached,  # [h] for h = 0 .. depth - 1: block depth - 1 - h updates these
        "trimmed_updates_per_owned_atom_block": sum(reached) / (depth * n_owned),
        "exchange_ghosts_per_owned": (int(exchange_shell.sum()) - n_owned) / n_owned,
        "hop_reach_A": reach,
    }


def strong_scaling_check(interaction_range: float, depth: int, skin: float, molecules_per_edge: int = 10) -> list[dict]:
    """The box of `benchmarks/lammps_scaling.py` on 1 and 2 ranks (slabs along x, LAMMPS's 2 x 1 x 1 grid):
    per rank the atoms held (owned + ghosts to G) and the trimmed block updates, counted on periodic images;
    the projected speed-up is the ratio of updates per rank."""
    from benchmarks.lammps_scaling import water_box as benchmark_box

    positions, _, lengths = benchmark_box(molecules_per_edge)
    ghost_range = depth * interaction_range + skin
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) * lengths
    images = (positions[None] + shifts[:, None]).reshape(-1, 3)
    central = np.zeros(len(images), dtype=bool)
    central[13 * len(positions) : 14 * len(positions)] = True  # shift (0, 0, 0)
    entries = []
    for ranks in (1, 2):
        low, high = np.zeros(3), lengths / np.array([ranks, 1, 1])
        held = np.all((images >= low - ghost_range) & (images < high + ghost_range), axis=1)
        subset = images[held]
        owned = (central & np.all((images >= low) & (images < high), axis=1))[held]
        pairs = cKDTree(subset).query_pairs(interaction_range, output_type="ndarray")
        graph = coo_matrix(
            (np.ones(2 * len(pairs), dtype=bool), (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
            shape=(len(subset), len(subset)),
        ).tocsr()
        within, updates = owned.copy(), int(owned.sum())
        for _ in range(depth - 1):
            within = within | (graph @ within.astype(np.int8) > 0)
            updates += int(within.sum())
        entries.append({"ranks": ranks, "owned": int(owned.sum()), "held": len(subset), "updates": updates})
    for entry in entries:
        entry["projected_speedup"] = entries[0]["updates"] / entry["updates"]
    return entries


# ---------------------------------------------------------------- report


def project(arguments: argparse.Namespace) -> dict:
    parameters = {"range": arguments.range, "depth": arguments.depth, "width": arguments.width}
    source = "command line"
    if arguments.model is not None:
        parameters = model_parameters(arguments.model)
        source = str(arguments.model.relative_to(ROOT) if arguments.model.is_relative_to(ROOT) else arguments.model)
    machine = report.machine_info()
    checks = []
    for atoms in COUNTED_ATOMS_PER_RANK:
        count = counted(atoms, parameters["range"], parameters["depth"], arguments.skin)
        formula = by_formula(count["atoms_per_rank"], parameters["range"], parameters["depth"], 1, arguments.skin)
        checks.append({"counted": count, "formula": formula})
        print(f"counted {count['atoms_per_rank']} owned atoms: {count['atoms_within_hops']}", flush=True)
    # the reach of one hop on the configuration, from the largest subdomain (the least cropping noise)
    hop_reach = float(np.median(checks[-1]["counted"]["hop_reach_A"]))
    rows = [
        by_formula(atoms, parameters["range"], parameters["depth"], parameters["width"], arguments.skin, hop_reach)
        for atoms in ATOMS_PER_RANK
    ]
    paths = arguments.output / "lammps_scaling.json"
    cost = (
        measured_costs(paths, parameters["depth"])
        if paths.is_file()
        else {"update_s": 1e-4, "exchange_ghost_cost": 0.15, "source": "assumed (no lammps_scaling.json)"}
    )
    for row in rows:
        row["efficiency"] = efficiencies(row, parameters["depth"], cost)
    scaling = {}
    measured = arguments.output / "lammps_scaling_grid.json"
    runs = {}
    if measured.is_file():
        for model in json.loads(measured.read_text())["results"]:
            runs[f"{model['interaction_range_A']}x{model['depth']}"] = {
                entry["ranks"]: entry for entry in model["runs"]
            }
    for text in arguments.check_models.split(","):
        interaction_range, depth = float(text.split("x")[0]), int(text.split("x")[1])
        entries = strong_scaling_check(interaction_range, depth, arguments.skin)
        for entry in entries:
            run = runs.get(f"{interaction_range}x{depth}", {}).get(entry["ranks"], {})
            entry["measured_held"] = (
                run["local_atoms_per_rank"] + run["ghost_atoms_per_rank"] if "local_atoms_per_rank" in run else None
            )
            entry["measured_pair_cpu_speedup"] = run.get("pair_cpu_speedup")
            entry["measured_speedup"] = run.get("speedup")
        scaling[text] = entries
        print(f"strong scaling check {text}: {entries}", flush=True)
    return {
        "hop_reach_A": hop_reach,
        "cost": {**cost, "latency_s": LATENCY_S, "seconds_per_byte": SECONDS_PER_BYTE},
        "strong_scaling_check": scaling,
        "model": {**parameters, "receptive_field_A": parameters["range"] * parameters["depth"], "source": source},
        "skin_A": arguments.skin,
        "density_atoms_per_A3": WATER_DENSITY,
        "projection": rows,
        "counted": checks,
        "machine": report.finish(machine),
    }


def markdown(data: dict) -> str:
    model = data["model"]
    R, depth, width, skin = model["range"], model["depth"], model["width"], data["skin_A"]
    header = [
        "atoms/rank",
        "s Å",
        "ghosts/owned (shell)",
        "updates/owned (shell)",
        "updates/owned (trimmed, bound)",
        "updates/owned (trimmed, counted reach)",
        "KB/step (shell)",
        "msgs/step (shell)",
        "ghosts/owned (exchange)",
        "KB/step (exchange)",
        "msgs/step (exchange)",
        "efficiency (trimmed shell)",
        "efficiency (exchange)",
    ]
    rows = []
    for row in data["projection"]:
        shell, exchange = row["shell"], row["exchange"]
        rows.append(
            [
                f"{row['atoms_per_rank']:,}",
                f"{row['edge_A']:.0f}",
                f"{shell['ghosts_per_owned']:.2f}",
                f"{shell['updates_per_owned_atom_block']:.2f}",
                f"{shell['trimmed_updates_per_owned_atom_block']:.2f}",
                f"{shell['trimmed_updates_per_owned_atom_block_counted_reach']:.2f}",
                f"{shell['bytes_per_step'] / 1e3:,.0f}",
                shell["messages_per_step"],
                f"{exchange['ghosts_per_owned']:.2f}",
                f"{exchange['bytes_per_step'] / 1e3:,.0f}",
                exchange["messages_per_step"],
                f"{row['efficiency']['shell_trimmed']:.0%}",
                f"{row['efficiency']['exchange']:.0%}",
            ]
        )
    check_rows = [
        [
            f"{check['counted']['atoms_per_rank']:,}",
            f"{check['counted']['edge_A']:.1f}",
            f"{check['counted']['ghosts_per_owned']:.2f} / {check['formula']['shell']['ghosts_per_owned']:.2f}",
            f"{check['counted']['trimmed_updates_per_owned_atom_block']:.2f} / "
            f"{check['formula']['shell']['trimmed_updates_per_owned_atom_block']:.2f}",
            f"{check['counted']['exchange_ghosts_per_owned']:.2f} / {check['formula']['exchange']['ghosts_per_owned']:.2f}",
            " ".join(str(n) for n in check["counted"]["atoms_within_hops"]),
        ]
        for check in data["counted"]
    ]
    gpu = next(row for row in data["projection"] if row["atoms_per_rank"] == 100_000)
    cpu = next(row for row in data["projection"] if row["atoms_per_rank"] == 1_000)
    return (
        "# LAMMPS domain decomposition of a local model: a projection on paper\n\n"
        f"Model: interaction range R = {R} Å, {depth} blocks (receptive field {R * depth} Å), width {width} "
        f"({model['source']}); skin {skin} Å; liquid water, {data['density_atoms_per_A3']} atoms/Å³; cubic "
        "subdomains of edge s. Per rank and MD step. `updates/owned` is atom-block updates (each one an "
        "attention row over the atom's neighbours within R, forward and backward) per owned atom and block: "
        "the redundant work of the decomposition, 1 for none. **Shell**: ghosts to d R + skin, positions out "
        "and forces back once per step; **trimmed**: the same ghosts and "
        "messages, block l updating only atoms within d - 1 - l hops of the owned atoms (`forward_neighbors`, "
        "`pair_style transformer exchange no`); **exchange**: ghosts to R + skin, every block updates owned "
        f"atoms only and exchanges {2 * width} float64 keys and values per ghost with the neighbours, d - 1 times forward and d - 1 times "
        "backward (`pair_style transformer` on several ranks; DeePMD `border_op`, ML-IAP `forward_exchange`). 1–3k atoms/rank is a CPU rank; 10^5–10^6 "
        "a GPU. `efficiency`: the owned atoms' own work over the rank's time per step, with one atom-block "
        f"update costing {1e6 * data['cost']['update_s']:.0f} µs and a ghost of the exchange path "
        f"{data['cost']['exchange_ghost_cost']:.3f} of an owned atom's step ({data['cost']['source']}), "
        f"{1e6 * data['cost']['latency_s']:.0f} µs per message and {1e-9 / data['cost']['seconds_per_byte']:.0f} "
        "GB/s, messages not overlapped with work.\n\n"
        + report.markdown_table(header, rows)
        + "\n\nCounted on a water configuration against the formula (counted / formula; the hop counts "
        "are the atoms within 0, 1, ... hops of the owned ones, which block d - 1, d - 2, ... updates):\n\n"
        + report.markdown_table(
            [
                "owned",
                "s Å",
                "ghosts/owned",
                "updates/owned (trimmed)",
                "ghosts/owned (exchange)",
                "atoms within 0, 1, ... hops",
            ],
            check_rows,
        )
        + "\n\n## Check against `lammps_scaling_grid.md`\n\nThe 3,000-atom box of the strong-scaling benchmark "
        "(skin 1 Å), counted on its periodic images: atoms held per rank (LAMMPS's owned + ghosts measured, "
        "where a result exists), trimmed block updates per rank, and the speed-up their ratio projects "
        "against the measured ones (`pair CPU`: the pair style's CPU time per rank; wall: on a shared "
        "machine).\n\n"
        + report.markdown_table(
            [
                "model",
                "ranks",
                "owned/rank",
                "held/rank",
                "held (LAMMPS)",
                "updates/rank",
                "projected speed-up",
                "measured pair CPU speed-up",
                "measured wall speed-up",
            ],
            [
                [
                    f"{name.split('x')[0]} Å x {name.split('x')[1]}",
                    entry["ranks"],
                    entry["owned"],
                    entry["held"],
                    None if entry["measured_held"] is None else f"{entry['measured_held']:.0f}",
                    entry["updates"],
                    f"{entry['projected_speedup']:.2f}",
                    report.number(entry["measured_pair_cpu_speedup"], 3),
                    report.number(entry["measured_speedup"], 3),
                ]
                for name, entries in data["strong_scaling_check"].items()
                for entry in entries
            ],
        )  # fmt: skip
        + f"\n\nOne hop reaches {data['hop_reach_A']:.1f} Å on this configuration (R = {R} Å: few atoms sit at the "
        "edge of a neighbour's range), so the bound overstates the trimmed work; `counted reach` uses the counted "
        "hop. Not trimmed, and so not in `updates/owned`: the displacement encoding of every held atom's pairs "
        "(once per step) and each block's key/value projection of every held atom (one matrix product per atom, "
        "no neighbour loop). They cost little: handing the model only the atoms within d hops and the pairs of "
        "those within d - 1 hops (5,832 instead of 9,890 atoms and 35k instead of 76k pairs for the 3 Å x 2 model "
        "on 3,000 atoms) left the pair style's CPU time unchanged (95 against 98 ms per step; 490 against 491 ms "
        "for 4 Å x 3), so the pair style hands the model the whole ghost shell.\n\n"
        f"Reading it: at 1,000 atoms per CPU rank the shell design holds {cpu['shell']['ghosts_per_owned']:.1f} "
        f"ghosts per owned atom and, untrimmed, repeats every block on them "
        f"({cpu['shell']['updates_per_owned_atom_block']:.1f}x the work); trimming brings the work to "
        f"{cpu['shell']['trimmed_updates_per_owned_atom_block_counted_reach']:.1f}x "
        f"(bound {cpu['shell']['trimmed_updates_per_owned_atom_block']:.1f}x), feature exchange to 1x with "
        f"{cpu['exchange']['ghosts_per_owned']:.1f} ghosts per owned atom but "
        f"{cpu['exchange']['messages_per_step'] // cpu['shell']['messages_per_step']}x the messages (a "
        "synchronisation per block, forward and backward) and "
        f"{cpu['exchange']['bytes_per_step'] / cpu['shell']['bytes_per_step']:.1f}x the bytes. At 100,000 "
        f"atoms per GPU the shell design does "
        f"{gpu['shell']['trimmed_updates_per_owned_atom_block_counted_reach']:.2f}x the work (trimmed; "
        f"{gpu['shell']['updates_per_owned_atom_block']:.2f}x untrimmed) in "
        f"{gpu['shell']['messages_per_step']} messages of {gpu['shell']['bytes_per_step'] / 1e6:.1f} MB in all, "
        f"against feature exchange's 1x in {gpu['exchange']['messages_per_step']} messages of "
        f"{gpu['exchange']['bytes_per_step'] / 1e6:.1f} MB. Counting messages and bytes at "
        f"{1e6 * data['cost']['latency_s']:.0f} µs and {1e-9 / data['cost']['seconds_per_byte']:.0f} GB/s, the "
        f"exchange path keeps {cpu['efficiency']['exchange']:.0%} parallel efficiency at 1,000 atoms per rank "
        f"(the trimmed shell {cpu['efficiency']['shell_trimmed']:.0%}) and {gpu['efficiency']['exchange']:.0%} "
        f"at 100,000 (shell {gpu['efficiency']['shell_trimmed']:.0%}): `pair_style transformer` exchanges on "
        "several ranks, and `exchange no` keeps the shell for a network where messages cost far more.\n\n"
        + report.machine_markdown(data["machine"]).split(";")[0]
        + " (no timing: counting only).\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a local export: its range, depth and width")
    parser.add_argument("--range", type=float, default=3.0, help="interaction range R (Å)")
    parser.add_argument("--depth", type=int, default=4, help="blocks")
    parser.add_argument("--width", type=int, default=64, help="features per atom")
    parser.add_argument("--skin", type=float, default=1.0, help="neighbour skin (Å)")
    parser.add_argument(
        "--check-models", default="3.0x2,3.0x4,4.0x3", help="RANGExLAYERS of lammps_scaling's models, to check against"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results")
    arguments = parser.parse_args(argv)
    data = project(arguments)
    report.write_json(data, arguments.output / "lammps_projection.json")
    (arguments.output / "lammps_projection.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
