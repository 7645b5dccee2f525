"""TrainConfig: the typed description of one training run, loaded from YAML plus overrides.

A run is a config file plus a few ``key=value`` overrides (dotted keys, type-checked against the
dataclass fields): ``flamboyance train --config demo.yaml optim.lr=3e-4 data.video_text=null``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SOURCE_NAMES: tuple[str, ...] = ("m3w", "image_text", "video_text")


class ConfigError(ValueError):
    """A config file or override that does not fit the TrainConfig schema (names the key)."""
"""The three training sources, in the order their gradients are accumulated."""


@dataclass(kw_only=True)
class SourceConfig:
    """One data source (m3w, image_text or video_text): where it lives and how it is batched."""

    urls: list[str]
    """Dataset folders or shard files (any fsspec URL) read with ``flamboyance.shards``."""

    weight: float = 1.0
    """lambda_m: the source's loss is scaled by this before its backward (FL: 1.0 / 0.2 / 0.03)."""

    batch_size: int = 4
    """Samples of this source per optimizer step and worker."""

    max_tokens: int = 32
    """Tokens per sample (M3W window L=256; image/video-text ~32)."""

    max_images: int = 5
    """M3W: keep at most the first N images of the window (FL N=5)."""

    num_frames: int = 8
    """Video-text: frames per clip (FL: 8 frames at 1 fps); shorter clips repeat their last frame."""

    next_image_p: float = 0.5
    """M3W image-placement augmentation: probability that a text span is tied to the next image
    instead of the previous one (FL p=0.5)."""

    shuffle_buffer: int = 100
    """Records held in each stream's shuffle buffer (0: no shuffling)."""

    caption_template: str = "{caption}"
    """Image/video-text: the text after the medium, ``<image>{template}<EOC>`` (FL: the bare caption).
    A small LM trained from scratch cannot pick up an evaluation prompt such as ``Output: {caption}``
    in context the way a pretrained LM does; the CPU demo trains in that format instead."""

    pairs_per_sequence: int = 1
    """Image/video-text: pairs packed one after another into one sample
    (``<image>c1<EOC><image>c2<EOC>...``, each caption attending only to its own medium). FL trains
    single pairs (1); packing gives a from-scratch LM the multi-image context of few-shot prompts."""

    random_pack_size: bool = False
    """Image/video-text with ``pairs_per_sequence`` > 1: each sample packs a uniform random
    1..``pairs_per_sequence`` pairs instead of exactly that many, so captions are trained after every
    number of preceding pairs (0..N-1 shots) and at every position up to the longest pack."""

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            self.urls = [self.urls]
        if not self.urls:
            raise ValueError("SourceConfig.urls must name at least one dataset URL")
        if self.weight < 0:
            raise ValueError(f"SourceConfig.weight must be >= 0, got {self.weight}")
        if "{caption}" not in self.caption_template:
            raise ValueError(f"SourceConfig.caption_template must contain '{{caption}}', got {self.caption_template!r}")
        for name in ("batch_size", "max_tokens", "max_images", "num_frames", "pairs_per_sequence"):
            if getattr(self, name) < 1:
                raise ValueError(f"SourceConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.next_image_p <= 1.0:
            raise ValueError(f"SourceConfig.next_image_p must be in [0, 1], got {self.next_image_p}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"SourceConfig.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


@dataclass(kw_only=True)
class DataConfig:
    """The sources of a run (None: source not used) and how each worker loads them."""

    m3w: SourceConfig | None = None
    """Interleaved web documents (``<image>`` / ``<EOC>`` sequences)."""

    image_text: SourceConfig | None = None
    """Image-caption pairs."""

    video_text: SourceConfig | None = None
    """Video-caption pairs (frames sampled by the shards pipeline)."""

    num_workers: int = 0
    """torch DataLoader processes per source and training worker (0: load in the training process)."""

    prefetch_factor: int = 4
    """Batches prefetched per loader process (ignored when num_workers is 0)."""

    multiprocessing_context: Literal["fork", "spawn", "forkserver"] | None = None
    """Start method of loader processes (None: the platform default)."""

    prefetch_batches: int = 2
    """Batches per source received ahead by a background thread of the training process, so that
    unpickling from the loader processes overlaps the step (0: receive in the step)."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"DataConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.prefetch_factor < 1:
            raise ValueError(f"DataConfig.prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.prefetch_batches < 0:
            raise ValueError(f"DataConfig.prefetch_batches must be >= 0, got {self.prefetch_batches}")

    def sources(self) -> dict[str, SourceConfig]:
        """The configured sources in accumulation order."""
        return {name: getattr(self, name) for name in SOURCE_NAMES if getattr(self, name) is not None}


@dataclass(kw_only=True)
class ModelConfig:
    """Which model to train: a tiny random one (tokenizer trained on the run's text) or a
    ``FlamingoConfig`` built from named towers."""

    kind: Literal["tiny", "flamingo", "pretrained"] = "tiny"
    """tiny: ``model.tiny.tiny_config(**tiny)`` with a tokenizer trained on text sampled from the
    shards; flamingo: ``FlamingoConfig(**flamingo)``; pretrained: ``Flamingo.from_pretrained(path)``."""

    tiny: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``model.tiny.tiny_config`` (kind=tiny)."""

    flamingo: dict[str, Any] = field(default_factory=dict)
    """Fields of ``FlamingoConfig`` (kind=flamingo), e.g. language_model, vision_encoder."""

    path: str | None = None
    """A ``save_pretrained`` folder to start from (kind=pretrained)."""

    tokenizer_vocab_size: int = 2000
    """Vocabulary of the locally trained BPE tokenizer (kind=tiny)."""

    tokenizer_corpus_records: int = 500
    """Records per source read (in shard order) to train the tiny tokenizer on (kind=tiny)."""

    language_model: str | None = None
    """kind=tiny: a causal-LM folder (``save_pretrained``, e.g. from ``flamboyance pretrain-lm``) loaded
    with ``from_pretrained`` and frozen, with its tokenizer, instead of a random LM (the tiny LM
    keys then do not apply; the vision tower and the new blocks stay tiny)."""

    def __post_init__(self) -> None:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("ModelConfig.path is required when model.kind is 'pretrained'")
        if self.kind == "flamingo" and not self.flamingo:
            raise ValueError("ModelConfig.flamingo must hold FlamingoConfig fields when model.kind is 'flamingo'")


@dataclass(kw_only=True)
class OptimConfig:
    """AdamW with linear warmup then a constant rate (FL/OF)."""

    lr: float = 1e-4
    """Peak learning rate."""

    warmup_steps: int = 5000
    """Linear warmup from 0 over this many optimizer steps, then constant."""

    weight_decay: float = 0.1
    """Applied to the weight matrices of the modules in ``decay_patterns`` only; 0 on gates, norms,
    biases, latents, time embeddings and token embedding rows."""

    decay_patterns: list[str] = field(default_factory=lambda: ["xattn.", "resampler."])
    """A trainable ``nn.Linear`` weight gets weight decay when its name contains one of these."""

    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""

    eps: float = 1e-8
    """AdamW epsilon."""

    grad_clip: float = 1.0
    """Clip the global gradient norm once per optimizer step (<= 0: no clipping)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"OptimConfig.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"OptimConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2:
            raise ValueError(f"OptimConfig.betas must have 2 values, got {self.betas}")


@dataclass(kw_only=True)
class ParallelConfig:
    """Data parallelism, precision and memory options, applied from outside the model."""

    num_workers: int = 1
    """Training workers (Ray Train workers; one process each)."""

    use_gpu: bool = False
    """One GPU per worker (NCCL); False: CPU workers (gloo)."""

    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per training worker."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp: replicate the model; fsdp: shard it (FSDP2 ``fully_shard`` per block; meant for GPUs,
    also runs on CPU over gloo)."""

    precision: Literal["fp32", "bf16"] = "fp32"
    """bf16: autocast the forward in bfloat16 (weights and optimizer state stay fp32)."""

    activation_checkpointing: bool = False
    """Recompute the activations of every module listed in ``checkpoint_classes`` in the backward."""

    checkpoint_classes: list[str] = field(
        default_factory=lambda: ["GPT2Block", "LlamaDecoderLayer", "Qwen2DecoderLayer", "OPTDecoderLayer"]
    )
    """Module class names wrapped by activation checkpointing (LM decoder layers; the gated
    blocks run inside their layer and are recomputed with it)."""

    fsdp_classes: list[str] = field(
        default_factory=lambda: [
            "GatedCrossAttentionBlock",
            "GPT2Block",
            "LlamaDecoderLayer",
            "Qwen2DecoderLayer",
            "OPTDecoderLayer",
        ]
    )
    """Module class names that FSDP shards as one unit each (the root is sharded last)."""

    find_unused_parameters: bool = False
    """DDP: tolerate trainable parameters that a step does not use."""

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError(f"ParallelConfig.num_workers must be >= 1, got {self.num_workers}")


@dataclass(kw_only=True)
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every: int = 100
    """Write a checkpoint every N optimizer steps (and at the last step)."""

    keep: int = 2
    """Checkpoints kept (older ones are deleted)."""

    def __post_init__(self) -> None:
        if self.every < 1 or self.keep < 1:
            raise ValueError(f"CheckpointConfig.every and keep must be >= 1, got {self.every}, {self.keep}")


@dataclass(kw_only=True)
class LoggingConfig:
    """Where and how often metrics go."""

    every: int = 1
    """Log metrics every N optimizer steps (metrics.jsonl gets one object per logged step)."""

    tensorboard: bool = True
    """Also write TensorBoard events under ``<run_dir>/tensorboard``."""

    progress: bool = True
    """Console progress bar on rank 0."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"LoggingConfig.every must be >= 1, got {self.every}")


@dataclass(kw_only=True)
class RayConfig:
    """How the run is launched."""

    enabled: bool = True
    """False: run the per-worker loop in this process (one worker, no Ray) for debugging."""

    address: str | None = None
    """Cluster to join; None: ``RAY_ADDRESS`` when set, else start a local Ray instance."""

    num_cpus: int | None = None
    """CPUs of a locally started Ray instance (None: all)."""

    object_store_memory: int | None = 200 * 2**20
    """Object store bytes of a locally started Ray instance."""

    max_failures: int = 3
    """Restarts from the latest checkpoint after a worker dies (FailureConfig)."""


@dataclass(kw_only=True)
class StorageConfig:
    """Object storage for ``run_dir=s3://bucket/run`` (credentials: the usual AWS environment
    variables / files, never the config)."""

    endpoint_override: str | None = None
    """S3-compatible endpoint (``http://127.0.0.1:9000`` for MinIO / moto); None: AWS."""

    region: str | None = None
    """S3 region; None: from the environment."""

    local_dir: str | None = None
    """Where processes keep their local working copy of a remote run (init/, metrics, final
    before upload); None: the system temp folder."""


@dataclass(kw_only=True)
class FaultConfig:
    """Fault injection for tests: kill one worker once at a given step."""

    kill_at_step: int | None = None
    """Kill the worker (SIGKILL) just before this optimizer step; None: never."""

    kill_rank: int = 0
    """Which worker rank dies."""

    marker_file: str | None = None
    """Created before the kill; when it exists no kill happens (so a restarted attempt survives)."""

    def __post_init__(self) -> None:
        if self.kill_at_step is not None and not self.marker_file:
            raise ValueError("FaultConfig.kill_at_step needs marker_file (else every restart dies again)")


@dataclass(kw_only=True)
class TrainConfig:
    """One training run."""

    run_dir: str = "runs/demo"
    """Run folder: init/, final/, checkpoints, metrics.jsonl, tensorboard/, gates.png. A local path
    or an object-storage URI (``s3://bucket/run``, see ``storage``; needs ``ray.enabled``)."""

    max_steps: int = 300
    """Optimizer steps of the whole run (a resumed run continues up to this)."""

    seed: int = 0
    """Seeds the data streams, augmentation and RNGs (the same seed gives the same run)."""

    mode: Literal["accumulate", "round_robin"] = "accumulate"
    """accumulate: every step sums the weighted gradients of all sources (FL); round_robin: step t
    uses only source t mod M (the paper's ablation)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"TrainConfig.max_steps must be >= 1, got {self.max_steps}")
        if not self.data.sources():
            raise ValueError("TrainConfig.data needs at least one of m3w, image_text, video_text")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-able); ``from_dict`` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict, type-checking every field."""
        return _build(cls, data, "")

    def resolved(self) -> TrainConfig:
        """A copy whose local paths (run_dir, source URLs) are absolute, so that Ray workers with
        another working directory read the same files."""
        out = TrainConfig.from_dict(self.to_dict())
        out.run_dir = _absolute_url(out.run_dir)
        for source in out.data.sources().values():
            source.urls = [_absolute_url(u) for u in source.urls]
        if out.model.path:
            out.model.path = _absolute_url(out.model.path)
        if out.model.language_model:
            out.model.language_model = _absolute_url(out.model.language_model)
        if out.faults.marker_file:
            out.faults.marker_file = _absolute_url(out.faults.marker_file)
        return out


def _absolute_url(url: str) -> str:
    if "://" in url:
        return url
    return str(Path(url).expanduser().resolve())


# --- loading -----------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, where: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise naming the key ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(f"{where}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected a mapping, got {value!r}")
        key_t, val_t = args if args else (Any, Any)
        return {_convert(key_t, k, where): _convert(val_t, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise TypeError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to a nested dict; the value is parsed as YAML
    (``3e-4``, ``true``, ``null``, ``[a, b]``). Unknown keys are caught when the config is built."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key=value (e.g. optim.lr=3e-4)")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "3e-4" as a string
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (None: all defaults) and apply ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a config file must hold a mapping at top level")
    for override in overrides:
        apply_override(data, override)
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None



def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser found wrong, and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def check_ready(cfg: TrainConfig) -> None:
    """What the types cannot check, before any work starts (tokenizer training, Ray): the keyword
    arguments of the model builders (``model.tiny`` -> ``tiny_config``, ``model.flamingo`` ->
    ``FlamingoConfig``) and that every data source has a shard that reads. Raises `ConfigError`
    with one line naming the key or URL."""
    import inspect

    if cfg.model.kind == "tiny" and cfg.model.tiny:
        from flamboyance.model.tiny import tiny_config

        known = set(inspect.signature(tiny_config).parameters) - {"tokenizer"}  # the run trains it
        _check_keys(cfg.model.tiny, known, "model.tiny")
    if cfg.model.kind == "flamingo":
        from flamboyance.model.config import FlamingoConfig

        _check_keys(cfg.model.flamingo, {f.name for f in dataclasses.fields(FlamingoConfig)}, "model.flamingo")
    for name, source in cfg.data.sources().items():
        _check_source(name, source)


def _check_keys(values: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")


def _check_source(name: str, source: SourceConfig) -> None:
    """The source lists shards, and the first one that reads proves it is not all corrupt (one
    member read in the normal case)."""
    import tarfile

    import fsspec
    from flamboyance.shards.source import iter_tar, locate, open_tar_stream

    where = f"data.{name}.urls {source.urls}"
    try:
        shards = locate(source.urls, kind=name).shards
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not shards:
        raise ConfigError(f"{where}: the dataset lists no shards")
    problems = []
    for ref in shards:
        try:
            with fsspec.open(ref.url, "rb") as handle:
                next(iter_tar(open_tar_stream(handle)))
            return
        except StopIteration:
            problems.append(f"{ref.url}: empty tar")
        except (OSError, ValueError, EOFError, tarfile.TarError) as exc:
            problems.append(f"{ref.url}: {exc}")
    raise ConfigError(f"{where}: none of the {len(shards)} shard(s) is a readable tar (first: {problems[0]})")


__all__ = [
    "SOURCE_NAMES",
    "ConfigError",
    "CheckpointConfig",
    "DataConfig",
    "FaultConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "ParallelConfig",
    "RayConfig",
    "SourceConfig",
    "TrainConfig",
    "apply_override",
    "check_ready",
    "load_config",
]
