"""What `mdplugin train` takes: the training options, with the model's architecture nested whole as a
`ModelConfig`. Defaults are written here and in `mdplugin.model.config` only; the CLI reads them from
these classes. Free of torch, so that `mdplugin train --help` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mdplugin.model.config import ModelConfig


@dataclass
class TrainingOptions:
    train_files: list[str]
    output: str = "model.pt"
    model: ModelConfig = field(default_factory=ModelConfig)  # the architecture; its elements: see `elements`
    elements: list[int] | None = None  # the elements the model knows; None: those of the training data
    attention_init: str = (
        "distance"  # global model: "distance" (Gaussian kernels, see init_distance_attention) or "random"
    )
    validation_files: list[str] = field(default_factory=list)
    validation_fraction: float = 0.1
    seed: int = 0
    epochs: int = 100
    validate_every: int = 1  # epochs between validations (and checkpoints); the last epoch always has one
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    # a resumed run warms up and decays the learning rate again over its own steps (fine-tuning on grown data),
    # instead of continuing the schedule it left, which is near its end
    restart_schedule: bool = False
    energy_weight: float = 1.0
    force_weight: float = 10.0
    stress_weight: float = 10.0  # per-atom virial term, for frames with a stress label
    forces_only_files: list[str] = field(default_factory=list)  # frames trained on their forces alone
    forces_only_weight: float = 0.1  # their force term relative to a fully labelled frame's
    gradient_clip: float = 1.0
    ema_decay: float = 0.0  # 0 disables the exponential moving average of the weights
    augment_rotations: bool = True
    threads: int | None = None
    device: str = "cpu"  # where the model trains: cpu, cuda or cuda:N; checkpoints are saved on the CPU
    drop_outliers: bool = False  # train without the frames find_outliers flags, instead of refusing the data
    progress: bool = True


MODEL_OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "elements")  # set through TrainingOptions.model
TRAINING_OPTIONS = tuple(f.name for f in fields(TrainingOptions) if f.name != "model")


def default(name: str):
    """The default of a training or model option, by name: the one place the CLI takes it from."""
    for cls in (TrainingOptions, ModelConfig):
        for item in fields(cls):
            if item.name == name:
                return item.default
    raise KeyError(name)
