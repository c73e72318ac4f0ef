"""OpenMM reporters for `mdplugin run`: state data that watches the run, a DCD with a true header,
and what a restart does to the files of the run it continues.

`StateReporter` writes the state-data CSV (the columns of OpenMM's StateDataReporter, plus box
volume and density for periodic systems and the out-of-domain ratio) and stops the run with
`RunFailed` when it blows up: non-finite energies or positions, a temperature far above the target,
or (NVE) a total energy that jumps. It also compares the shortest distance of every element pair
with the shortest distance the model saw in training.
"""

from __future__ import annotations

import csv
import math
import os
import struct
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
from openmm import unit

from mdplugin.dcd import read_dcd_header
from mdplugin.md.options import RunFailed, RunWarning
from mdplugin.units import KJ_PER_MOL_PER_EV

GAS_CONSTANT_KJ_PER_MOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
GRAMS_PER_ML_PER_AMU_PER_NM3 = 1.66053906660e-3  # 1 amu / 1 nm³ in g/mL
TEMPERATURE_RUNAWAY_FACTOR = 10.0  # a temperature above 10x the target (or the floor below) is a blow-up
TEMPERATURE_RUNAWAY_FLOOR_K = 1000.0  # so that a run near 0 K is not stopped by its first hot step
ENERGY_JUMP_EV_PER_ATOM = 1.0  # NVE total energy may wander by meV/atom; 1 eV/atom means broken dynamics
DOMAIN_RATIO = "Shortest distance / training (ratio)"
DEVIATION = "Max force deviation (eV/A)"
VOLUME = "Box Volume (nm^3)"
DENSITY = "Density (g/mL)"


# ---------------------------------------------------------------------------------------- domain


def pair_name(first: app.Element, second: app.Element) -> str:
    """Element pairs as the training domain records them: symbols in order of atomic number."""
    low, high = sorted((first, second), key=lambda element: element.atomic_number)
    return f"{low.symbol}-{high.symbol}"


@dataclass
class DomainCheck:
    """Compare the shortest distance of each element pair with the shortest one seen in training."""

    shortest_training: dict[str, float]  # "H-C" -> Å
    elements: list[app.Element]  # per atom checked
    mode: str = "warn"  # warn or stop
    tolerance: float = 0.9  # a pair closer than tolerance x its training minimum is out of domain
    closest_ratio: float | None = None  # the smallest ratio seen so far
    closest_pair: str | None = None
    warned: bool = False
    stop_reason: str | None = None  # set (mode stop) when a pair came too close: the run must end
    atoms: list[int] | None = None  # the particles checked (ML/MM: the model's); None: all

    def __post_init__(self):
        species = sorted({element for element in self.elements}, key=lambda element: element.atomic_number)
        index = {element: i for i, element in enumerate(species)}
        self._species = np.array([index[element] for element in self.elements])
        self._count = len(species)
        self._names = {
            i * self._count + j: pair_name(species[i], species[j])
            for i in range(self._count)
            for j in range(i, self._count)
        }
        # pairs beyond this cannot be the closest in ratio when any pair is closer than 1.5x its minimum
        self.cutoff = 1.5 * max(self.shortest_training.values(), default=1.0)

    def shortest_distances(self, positions: np.ndarray, box: np.ndarray | None) -> dict[str, float]:
        """Shortest distance (Å) per element pair within `cutoff`; minimum image in a periodic box.

        A cell-list neighbour search (vesin): O(N) per report."""
        import torch
        import vesin_torch

        points = torch.from_numpy(np.ascontiguousarray(positions, dtype=np.float64))
        cell = torch.zeros(3, 3, dtype=torch.float64) if box is None else torch.from_numpy(box.astype(np.float64))
        first, second, distances = vesin_torch.NeighborList(cutoff=self.cutoff, full_list=False).compute(
            points, cell, periodic=box is not None, quantities="ijd"
        )
        first, second, distances = first.numpy(), second.numpy(), distances.numpy()
        low = np.minimum(self._species[first], self._species[second])
        high = np.maximum(self._species[first], self._species[second])
        shortest = np.full(self._count * self._count, np.inf)
        np.minimum.at(shortest, low * self._count + high, distances)
        return {self._names[code]: float(shortest[code]) for code in np.flatnonzero(np.isfinite(shortest))}

    def check(self, positions: np.ndarray, box: np.ndarray | None, step: int) -> float:
        """The smallest distance/training-minimum ratio now (NaN: no recorded pair within reach).

        When a pair is closer than the tolerance: warns once, or with mode stop sets `stop_reason`."""
        if self.atoms is not None:
            positions = positions[self.atoms]
        ratios = {
            pair: distance / self.shortest_training[pair]
            for pair, distance in self.shortest_distances(positions, box).items()
            if pair in self.shortest_training and self.shortest_training[pair] > 0
        }
        if not ratios:
            return math.nan
        pair = min(ratios, key=ratios.get)
        ratio = ratios[pair]
        if self.closest_ratio is None or ratio < self.closest_ratio:
            self.closest_ratio, self.closest_pair = ratio, pair
        if ratio < self.tolerance:
            message = (
                f"at step {step} the {pair} distance is {ratio * self.shortest_training[pair]:.3f} Å, below "
                f"{self.tolerance:g} x the shortest {pair} distance in the model's training data "
                f"({self.shortest_training[pair]:.3f} Å): the model is extrapolating"
            )
            if self.mode == "stop":
                self.stop_reason = (
                    f"{message}; the run was stopped (--domain-check stop). Use a smaller --timestep-fs or "
                    "--temperature-k, or a model trained on such close contacts"
                )
                return ratio
            if not self.warned:
                self.warned = True
                warnings.warn(f"{message}; its energies and forces there are not to be trusted", RunWarning, 2)
        return ratio


@dataclass
class DeviationCheck:
    """A committee export's model deviation (the largest per-atom force deviation of its members) at each
    report; above `threshold` it warns once, or with mode stop ends the run."""

    potential: object  # mdplugin.export.loader.Potential of a committee export
    numbers: list[int]
    charge: int
    multiplicity: int
    threshold: float  # eV/Å
    mode: str = "warn"
    atoms: list[int] | None = None  # the particles the model computes (ML/MM); None: all
    lead_from_state: bool = False  # an all-ML System: the state's energy and forces are member 0's
    largest: float | None = None  # the largest deviation seen so far
    warned: bool = False
    stop_reason: str | None = None

    def check(self, positions: np.ndarray, box: np.ndarray | None, step: int, lead=None) -> float:
        """`lead`: member 0's (energy eV, forces eV/Å) from the step, when lead_from_state (K-1 evaluations)."""
        if self.atoms is not None:
            positions = positions[self.atoms]
        periodic = box is not None and self.potential.is_local
        cell, pbc = (box, [True] * 3) if periodic else (None, None)
        deviation = self.potential.deviation(positions, self.numbers, self.charge, self.multiplicity, cell, pbc, lead)[
            0
        ]
        self.largest = deviation if self.largest is None else max(self.largest, deviation)
        if deviation > self.threshold:
            message = (
                f"at step {step} the committee's force deviation is {deviation:.3f} eV/Å, above {self.threshold:g}: "
                "its members disagree, the model is outside what it learned"
            )
            if self.mode == "stop":
                self.stop_reason = f"{message}; the run was stopped (--domain-check stop)"
            elif not self.warned:
                self.warned = True
                warnings.warn(f"{message}; its energies and forces there are not to be trusted", RunWarning, 2)
        return deviation


# ----------------------------------------------------------------------------------- state data


def degrees_of_freedom(system: openmm.System) -> int:
    """3 per massive particle, less constraints and the centre-of-mass motion a CMMotionRemover removes."""
    count = 3 * sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i) > 0 * unit.dalton)
    count -= system.getNumConstraints()
    if any(isinstance(system.getForce(i), openmm.CMMotionRemover) for i in range(system.getNumForces())):
        count -= 3
    return count


class StateReporter:
    """The state-data CSV, and the watch that stops a run that blows up.

    `ensemble` and `temperature_k` set the limits: a temperature above max(10 x target, 1000 K), any
    NaN or infinite energy or position, and in NVE a total energy more than 1 eV/atom away from the
    first report's end the run with RunFailed (after the row that shows it is written)."""

    def __init__(
        self,
        path: Path,
        interval: int,
        system: openmm.System,
        ensemble: str,
        temperature_k: float,
        periodic: bool,
        domain: DomainCheck | None = None,
        append: bool = False,
        deviation: DeviationCheck | None = None,
    ):
        self.interval = interval
        self.ensemble = ensemble
        self.temperature_limit_k = max(TEMPERATURE_RUNAWAY_FACTOR * temperature_k, TEMPERATURE_RUNAWAY_FLOOR_K)
        self.periodic = periodic
        self.domain = domain
        self.deviation = deviation
        self.atoms = system.getNumParticles()
        self.degrees_of_freedom = degrees_of_freedom(system)
        self.mass_amu = sum(system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(self.atoms))
        self.first_total_energy_kj: float | None = None
        self._clock: tuple[float, float] | None = None  # (wall time, simulated ps) at the start
        self.header = state_data_header(periodic, domain is not None, deviation is not None)
        self._file = open(path, "a" if append else "w", newline="")
        self._writer = csv.writer(self._file)
        if not append:
            self._file.write("#" + ",".join(f'"{name}"' for name in self.header) + "\n")

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 - OpenMM's reporter API
        if self._clock is None:
            self._clock = (time.perf_counter(), simulation.context.getTime().value_in_unit(unit.picosecond))
        steps = self.interval - simulation.currentStep % self.interval
        wanted = ["positions", "energy"] + (["forces"] if self.deviation and self.deviation.lead_from_state else [])
        return {"steps": steps, "periodic": None, "include": wanted}

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        step = simulation.currentStep
        time_ps = state.getTime().value_in_unit(unit.picosecond)
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        total = potential + kinetic
        temperature = 2 * kinetic / (self.degrees_of_freedom * GAS_CONSTANT_KJ_PER_MOL_K)
        wall, start_ps = self._clock
        elapsed = time.perf_counter() - wall
        speed = (time_ps - start_ps) * 1e-3 / elapsed * 86400.0 if elapsed > 0 else 0.0
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        row = [step, time_ps, potential, kinetic, total, temperature]
        box = None
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
            volume = state.getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)
            row += [volume, self.mass_amu * GRAMS_PER_ML_PER_AMU_PER_NM3 / volume]
        row.append(speed)
        finite = bool(np.isfinite(positions).all()) and math.isfinite(total)
        if self.domain is not None:
            row.append(self.domain.check(positions, box, step) if finite else math.nan)
        if self.deviation is not None:
            lead = None
            if self.deviation.lead_from_state and finite:
                forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
                lead = (potential / KJ_PER_MOL_PER_EV, forces / KJ_PER_MOL_PER_EV)
            row.append(self.deviation.check(positions, box, step, lead) if finite else math.nan)
        self._writer.writerow(row)
        self._file.flush()
        self.watch(step, total, temperature, finite)
        for check in (self.domain, self.deviation):
            if check is not None and check.stop_reason:
                raise RunFailed(check.stop_reason)

    def watch(self, step: int, total_kj: float, temperature_k: float, finite: bool) -> None:
        """Raise RunFailed when the run has blown up."""
        advice = "use a smaller --timestep-fs (0.5 fs suits molecules with hydrogen) or check the starting structure"
        if not finite:
            raise RunFailed(f"the run blew up at step {step}: the energy or positions are NaN or infinite; {advice}")
        if temperature_k > self.temperature_limit_k:
            raise RunFailed(
                f"the run blew up at step {step}: the temperature reached {temperature_k:.4g} K, above "
                f"{self.temperature_limit_k:.0f} K (10 x the target or 1000 K); {advice}"
            )
        if self.ensemble == "nve":
            if self.first_total_energy_kj is None:
                self.first_total_energy_kj = total_kj
            jump = abs(total_kj - self.first_total_energy_kj) / KJ_PER_MOL_PER_EV / self.atoms
            if jump > ENERGY_JUMP_EV_PER_ATOM:
                raise RunFailed(
                    f"the run blew up at step {step}: the NVE total energy moved {jump:.3g} eV/atom from its first "
                    f"report (more than {ENERGY_JUMP_EV_PER_ATOM:g}); {advice}"
                )

    def close(self) -> None:
        self._file.close()

    def __del__(self):
        self._file.close()


def state_data_header(periodic: bool, domain: bool, deviation: bool = False) -> list[str]:
    names = ["Step", "Time (ps)", "Potential Energy (kJ/mole)", "Kinetic Energy (kJ/mole)", "Total Energy (kJ/mole)",
             "Temperature (K)"]  # fmt: skip
    if periodic:
        names += [VOLUME, DENSITY]
    names.append("Speed (ns/day)")
    if domain:
        names.append(DOMAIN_RATIO)
    if deviation:
        names.append(DEVIATION)
    return names


def read_header(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        first = next(csv.reader(handle), [])
    return [name.strip('#"') for name in first]


def truncate_state_data(path: Path, step: int) -> None:
    """Drop the rows after `step` (written after the checkpoint a restart continues from)."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.startswith("#") or not line.strip() or int(line.split(",")[0]) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


# ------------------------------------------------------------------------------------ trajectory


def truncate_dcd(path: Path, step: int) -> None:
    """Keep the frames up to `step`; remove the file if none is left (the new run starts it again)."""
    header = read_dcd_header(path)
    frames = min(header.frames, max(0, (step - header.first_step) // header.interval + 1))
    if frames == 0:
        path.unlink()
        return
    with open(path, "r+b") as handle:
        handle.truncate(header.header_bytes + frames * header.frame_bytes)
        handle.seek(8)
        handle.write(struct.pack("<i", frames))
        handle.seek(20)
        handle.write(struct.pack("<i", header.first_step + (frames - 1) * header.interval))


def truncate_xtc(path: Path, step: int) -> None:
    """Keep the frames up to `step` (XTC frames carry their own step); rewrite the file if needed."""
    from mdtraj.formats import XTCTrajectoryFile

    with XTCTrajectoryFile(str(path)) as handle:
        xyz, times, steps, box = handle.read()
    keep = steps <= step
    if keep.all():
        return
    if not keep.any():
        path.unlink()
        return
    temporary = path.with_name(path.name + ".partial")
    with XTCTrajectoryFile(str(temporary), "w") as handle:
        handle.write(xyz[keep], time=times[keep], step=steps[keep], box=None if box is None else box[keep])
    os.replace(temporary, path)


class DCDReporter:
    """OpenMM's DCDReporter, with the header's first step right for a run that starts (or restarts
    into a new file) at any step, and the header's last step right when appending."""

    def __init__(self, path: Path, interval: int, append: bool = False, wrap: bool = True):
        self.path = path
        self.interval = interval
        self.append = append and path.exists()
        self.wrap = wrap  # False: unwrapped positions, for mean-square displacements
        self._file = None
        self._dcd = None

    def describeNextReport(self, simulation: app.Simulation) -> dict:  # noqa: N802 - OpenMM's reporter API
        return {"steps": self.interval - simulation.currentStep % self.interval, "periodic": None if self.wrap else False,
                "include": ["positions"]}  # fmt: skip

    def report(self, simulation: app.Simulation, state: openmm.State) -> None:
        if self._dcd is None:
            first_step = read_dcd_header(self.path).first_step if self.append else simulation.currentStep
            self._file = open(self.path, "r+b" if self.append else "wb")
            step_size = simulation.integrator.getStepSize()
            self._dcd = app.DCDFile(self._file, simulation.topology, step_size, first_step, self.interval, self.append)
        self._dcd.writeModel(state.getPositions(asNumpy=True), periodicBoxVectors=state.getPeriodicBoxVectors())
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __del__(self):
        self.close()
