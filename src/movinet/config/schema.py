"""The typed config: one dataclass per section, registered in Hydra's ConfigStore.

``conf/config.yaml`` starts its defaults list with ``movinet_schema`` (the ``Config`` below), so
Hydra merges every YAML file and every override into these types as it composes: an unknown key or
a value of the wrong type fails there, naming the key (``full_key: data.clips.num_frmes``), before
any work. Range checks that types cannot express run in ``__post_init__``, when the composed config
becomes these objects (``movinet.config.to_config``). Library code receives the objects, never dicts.

``data`` is split by what reads it: ``videos`` and ``labels_csv`` (the user's files, at the top
for the shortest overrides), ``generate`` (the demo only),
``extract`` (frame cache), ``labels`` (CSV ingestion), ``clips`` (the clip index and sampling),
``transform`` (crop and flip) and ``loader`` (batches).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING


class Interpolation(str, Enum):
    none = "none"
    hold = "hold"
    nearest = "nearest"


class OnError(str, Enum):
    fail = "fail"
    skip = "skip"


class SplitBy(str, Enum):
    auto = "auto"
    video = "video"
    time = "time"


class Sampling(str, Enum):
    hop = "hop"
    random = "random"


class Variant(str, Enum):
    base = "base"
    stream = "stream"


class Mode(str, Enum):
    max = "max"
    min = "min"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{key}: {message}")


@dataclass
class GenerateConfig:  # the demo generator (stage demo_data) only
    videos: int = 160
    width: int = 128
    height: int = 96
    min_frames: int = 40
    max_frames: int = 300
    seed: int = 0


@dataclass
class ExtractConfig:
    out_dir: str = "data/frames"  # the frame cache
    fps: Optional[float] = None  # None: keep the source frame rate
    size: int = 172  # short side in pixels (0: keep)
    workers: int = 2
    strict: bool = False  # fail on an unreadable video instead of skipping it

    def __post_init__(self) -> None:
        _check(self.fps is None or self.fps > 0, "data.extract.fps", f"must be > 0 or null, got {self.fps}")
        _check(self.size >= 0 and self.workers >= 1, "data.extract", "size must be >= 0 and workers >= 1")


@dataclass
class LabelsConfig:
    out_dir: str = "data/labels"  # per-frame labels, splits, classes, report
    interpolation: Interpolation = Interpolation.none
    on_error: OnError = OnError.fail
    split_by: SplitBy = SplitBy.auto  # video | time | auto: by video where a class has enough videos
    split_seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train, val, test

    def __post_init__(self) -> None:
        fractions = list(self.split_fractions)
        _check(
            len(fractions) == 3 and min(fractions) >= 0 and abs(sum(fractions) - 1) < 1e-6,
            "data.labels.split_fractions",
            f"must be three shares >= 0 that sum to 1, got {fractions}",
        )


@dataclass
class ClipsConfig:
    num_frames: int = 16  # frames per clip (T)
    frame_stride: int = 2  # take every s-th cached frame
    offset: int = 0  # cached frames from a window's start to its first frame (ensemble members)
    discard_threshold: float = 0.5  # drop clips whose majority label covers less of the T frames
    include_background: bool = False  # keep background-majority clips as a class
    train_sampling: Sampling = Sampling.hop  # training windows: every hop, or a random start
    train_hop: Optional[int] = None  # frames between training windows (None: half a clip span)
    eval_clips_per_video: int = 4  # fixed, evenly spaced evaluation clips

    def __post_init__(self) -> None:
        _check(
            self.num_frames >= 1 and self.frame_stride >= 1 and self.offset >= 0,
            "data.clips",
            "num_frames and frame_stride must be >= 1, offset >= 0",
        )
        _check(
            0.0 <= self.discard_threshold <= 1.0,
            "data.clips.discard_threshold",
            f"must be in [0, 1], got {self.discard_threshold}",
        )
        _check(self.eval_clips_per_video >= 1, "data.clips.eval_clips_per_video", "must be >= 1")


@dataclass
class TransformConfig:
    crop_size: int = 172  # model input (random resized crop in training, center crop in evaluation)
    crop_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # area share of the random crop box
    hflip: bool = True  # random horizontal flip in training ...
    no_flip_classes: list[str] = field(default_factory=list)  # ... never for these (a mirror changes the class)

    def __post_init__(self) -> None:
        low, high = (list(self.crop_scale) + [0, 0])[:2]
        _check(
            len(self.crop_scale) == 2 and 0 < low <= high <= 1,
            "data.transform.crop_scale",
            f"must be [low, high] with 0 < low <= high <= 1, got {list(self.crop_scale)}",
        )


@dataclass
class LoaderConfig:
    batch_size: int = 8  # per device (process): the global batch is batch_size x devices x num_nodes
    num_workers: Any = 2  # DataLoader worker processes, or auto (the CPUs per training process, less one)
    pin_memory: Optional[bool] = None  # null: pinned when training on CUDA (asynchronous copies)
    uint8_batches: Optional[bool] = None  # null: on CUDA (a quarter of the bytes; the GPU scales them)

    def __post_init__(self) -> None:
        workers_ok = self.num_workers == "auto" or (
            isinstance(self.num_workers, int) and not isinstance(self.num_workers, bool) and self.num_workers >= 0
        )
        _check(self.batch_size >= 1 and workers_ok, "data.loader", "batch_size >= 1, num_workers >= 0 or auto")


@dataclass
class DataConfig:
    name: str = MISSING
    videos: str = MISSING  # folder of videos, relative to the project root or absolute
    labels_csv: str = MISSING  # the labels CSV
    generate: Optional[GenerateConfig] = None
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: str = "a0"  # a0..a5
    variant: Variant = Variant.base  # base (3-D, non-causal) or stream (causal, frame by frame)
    dropout: float = 0.2  # classifier dropout
    frames: Optional[int] = None  # None: data.clips.num_frames; an int fixes the clip length
    pretrained: Optional[str] = None  # Kinetics-600 weights file: a new head is put on for your classes
    bn_momentum: float = 0.1  # BN statistics momentum (PyTorch convention; TF's long schedules: 0.01)

    def __post_init__(self) -> None:
        _check(self.arch.lower() in ("a0", "a1", "a2", "a3", "a4", "a5"), "model.arch", f"a0..a5, got {self.arch!r}")
        _check(self.frames is None or self.frames >= 1, "model.frames", "must be >= 1 or null")


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 0.003
    weight_decay: float = 0.0
    warmup_steps: int = 30  # linear warmup, then cosine decay to 0 at train.steps


@dataclass
class RMSpropConfig(OptimConfig):
    name: str = "rmsprop"
    alpha: float = 0.9
    momentum: float = 0.9
    eps: float = 1.0


OPTIMIZERS = {"adamw": OptimConfig, "rmsprop": RMSpropConfig}


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer`` as they are (``threads`` aside). Every Trainer argument a
    config can hold is here; the ones the run sets itself (steps, validation interval, logger,
    callbacks, output folder) come from ``train``. ``tests/test_config.py`` keeps this list complete."""

    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Optional[str] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = 1.0
    gradient_clip_algorithm: Optional[str] = None
    log_every_n_steps: int = 10
    limit_train_batches: Optional[float] = None
    limit_val_batches: Optional[float] = None
    overfit_batches: float = 0.0
    fast_dev_run: Any = False
    max_time: Optional[str] = None
    deterministic: Any = None
    benchmark: Optional[bool] = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    sync_batchnorm: bool = False
    detect_anomaly: bool = False
    barebones: bool = False
    profiler: Optional[str] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    threads: int = 2  # torch intra-op threads (ours, not a Trainer argument)

    def trainer_kwargs(self) -> dict:
        from dataclasses import asdict

        kwargs = {k: v for k, v in asdict(self).items() if k != "threads"}
        if self.accelerator == "cpu":  # torch's SyncBatchNorm runs on GPUs only: on CPU processes BN stays local
            kwargs["sync_batchnorm"] = False
        return kwargs


@dataclass
class TrainConfig:
    name: str = "video"  # run name: outputs in models/<name>, metrics/<name>.json
    steps: int = 600  # optimizer steps
    eval_interval: int = 150  # validate every this many steps
    label_smoothing: float = 0.1
    freeze_backbone: bool = False  # train only the classifier head
    monitor: str = "val_acc"  # the best checkpoint by this metric ...
    monitor_mode: Mode = Mode.max  # ... maximised or minimised
    resume: bool = True  # continue an interrupted run from last.ckpt (same MLflow run)
    init: Optional[str] = None  # continue from a trained model: models:/name@alias, runs:/<id>/model, a .pt
    channels_last: bool = False  # channels-last-3d memory layout for training (+11 % A0 clips/s on an H100)

    def __post_init__(self) -> None:
        _check(self.steps >= 1 and self.eval_interval >= 1, "train", "steps and eval_interval must be >= 1")


@dataclass
class EnsembleConfig:
    name: str = "ensemble"  # outputs: models/<name>/, metrics/<name>.json
    offsets: list[int] = field(default_factory=lambda: [0, 1])  # one member per offset

    def __post_init__(self) -> None:
        offsets = list(self.offsets)
        _check(
            bool(offsets) and len(set(offsets)) == len(offsets) and all(0 <= o < len(offsets) for o in offsets),
            "ensemble.offsets",
            f"must be distinct values in 0..{len(offsets) - 1}, got {offsets}",
        )


@dataclass
class RegisterConfig:
    name: str = "movinet"  # registered model name
    models: list[str] = field(default_factory=lambda: ["video", "ensemble"])  # evaluated models to register
    metric: str = "test_acc"  # version tag promotion compares (higher is better)
    promote: bool = True  # move the champion alias when a new version beats the current one


@dataclass
class MlflowConfig:
    experiment: str = "movinet"
    tracking_uri: Optional[str] = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optim: OptimConfig = MISSING
    trainer: TrainerConfig = MISSING
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)

    @property
    def frames_per_clip(self) -> int:
        """The model's clip length: ``model.frames`` when fixed (the baseline's 1), else ``data.clips.num_frames``."""
        return self.model.frames or self.data.clips.num_frames


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent). Called by ``movinet.config.compose``
    and by the ``hydra_plugins.movinet_config`` plugin, which Hydra imports in any process that
    composes ``conf/`` (``python pipelines/train.py``, ``dvc exp run``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="movinet_schema", node=Config)
    for name, node in OPTIMIZERS.items():
        store.store(group="schema/optim", name=name, node=node)
