"""What `mdplugin learn` takes, with its defaults (torch-free, so that the CLI's --help stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mdplugin.md.options import DEFAULT_FORCEFIELD
from mdplugin.model.config import ModelConfig


@dataclass
class LearnOptions:
    structures: list[str]  # start structures: files ASE reads (a cell with pbc makes a periodic box)
    reference: str  # see mdplugin.learn.reference
    output: str = "learn"  # the run's folder
    temperatures_k: list[float] = field(default_factory=lambda: [300.0])
    overheat: float = 1.5  # also sample at this x the top temperature (1: not)
    committee: int = 4
    max_rounds: int = 8
    # round 0: frames of the reference's MD per structure and temperature (the overheated one included); too
    # few, and the first committee disagrees at once everywhere, so that each round adds a frame per trajectory
    initial_frames: int = 100
    initial_stride: int = 20  # steps between them
    test_frames: int = 20  # per structure and temperature, from trajectories of their own: every round's test set
    # periodic boxes are also sampled at these volume factors: a many-body model's virial is not fixed by forces,
    # and a model that saw one density drifts away from it under a barostat
    volume_scales: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])
    rattled_frames: int = 20  # per structure, trained on forces only
    rattle_angstrom: float = 0.08  # standard deviation of the displacements added to thermal frames
    md_steps: int = 4000  # per trajectory and round
    trajectories: int = 2  # per start structure and temperature, each with its own seed
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.01
    # sample each round in water (ML/MM, mdplugin.learn.solvated) with this padding, nm; None: in vacuum
    solvate_nm: float | None = None
    forcefield: list[str] = field(default_factory=lambda: list(DEFAULT_FORCEFIELD))  # --solvate: water and ions
    check_every: int = 20  # steps between committee evaluations
    # trust levels, eV/Å: frames above `lower` are labelled; above `upper` a frame is unphysical and the
    # trajectory failed there. None: decided after round 1 from the committee's deviation on the test set (its
    # 99th percentile, and 3x that): a committee that disagrees by 0.2 eV/Å on frames it learned cannot meet 0.1
    lower: float | None = None
    upper: float | None = None
    max_new_frames: int = 10  # per trajectory and round
    converged_fraction: float = 0.01
    # training in optimizer steps, whatever the data's size (epochs follow: a small round-0 set is visited often);
    # the shipped ethanol-only model reached 27 meV/Å at 300 K in 37,500, and a committee under-trained by 10x
    # disagrees by ~1 eV/Å on its own training geometries
    training_steps: int = 20000  # round 1, from scratch
    steps_per_round: int = 5000  # each later round's fine-tuning, warm-started from the round before
    # coordinate_range 4 Å: the shipped MD17 recipe's
    model: ModelConfig = field(default_factory=lambda: ModelConfig(width=64, depth=3, heads=4, coordinate_range=4.0))
    batch_size: int = 8
    learning_rate: float = 1e-3
    ema_decay: float = 0.999  # exponential moving average of the weights: members' noise is not taken for doubt
    seed: int = 0
    threads: int = 1  # per process
    jobs: int = 0  # members trained at once, one process each (0: as many as the CPU cores allow)
    progress: bool = True
