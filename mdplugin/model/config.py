"""The model's architecture as one config object: written once here, nested whole in the training
options, stored in checkpoints and exports. Free of torch, so that the CLI can read its defaults cheaply."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class ModelConfig:
    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])  # atomic numbers
    width: int = 128
    depth: int = 4
    heads: int = 8
    ffn_multiplier: float = 8 / 3  # SwiGLU hidden = multiplier * width, as in LLaMA
    coordinate_embedding: str = "quadratic"  # x, y, z, |r|^2; or "gaussian" (soft bins), "fourier", "linear"
    coordinate_range: float = 8.0  # Å; gaussian centres span [-range, range]; quadratic: |r|^2 / range
    coordinate_features: int = 48  # per axis: gaussian bins or Fourier frequencies
    shortest_period: float = 2.0  # Å; Fourier periods run from 4 * range down to this
    max_charge: int = 4  # charge embedding covers -max_charge..max_charge
    max_multiplicity: int = 6  # spin multiplicity embedding covers 1..max_multiplicity
    interaction_range: float | None = None  # Å; None: global attention; R: attention within R in every block
    displacement_features: int = 16  # local model: width of the learned encoding of r_j - r_i
    radial_features: int = 16  # local model: Gaussians of |r_j - r_i| fed to that encoding (0: x, y, z, r^2 only)
    repulsion: str = "none"  # "zbl": a repulsive core below the training data's shortest distances (model/repulsion.py)

    def __post_init__(self) -> None:
        if self.interaction_range is not None and not (
            math.isfinite(self.interaction_range) and self.interaction_range > 0
        ):
            raise ValueError(f"interaction_range must be a positive number of Å, not {self.interaction_range}")
        if self.repulsion not in ("none", "zbl"):
            raise ValueError(f"repulsion must be none or zbl, not {self.repulsion!r}")

    @property
    def is_local(self) -> bool:
        return self.interaction_range is not None

    @property
    def receptive_field(self) -> float | None:
        """Å: the farthest atom whose position changes an atom's energy (None: every atom)."""
        return None if self.interaction_range is None else self.depth * self.interaction_range

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; is this file from a newer mdplugin?")
        return cls(**{**FILES_BEFORE, **values})


# what a file written before a config key existed meant by leaving it out
FILES_BEFORE = {"radial_features": 0}
