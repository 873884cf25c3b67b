"""Typed configurations (dataclasses) with a YAML round trip and ``--set key=value`` overrides.

A run is described by :class:`RunConfig`: the model (its registered name plus the fields of that model's own
config dataclass), the data, and the training schedule. ``to_dict``/``from_dict`` round-trip exactly through YAML;
unknown keys and values of the wrong type raise :class:`wae.errors.ConfigError` with one clear line.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path


from .errors import ConfigError
from .renames import REMOVED, RENAMED, drop_removed, migrate
from .registry import Registry
from .typed import coerce, names as _names, short as _short, to_dict
from .yamlio import dump_yaml, load_yaml, safe_yaml

__all__ = ["ModelConfig", "DataConfig", "TrainConfig", "RunConfig", "from_dict", "to_dict", "apply_overrides",
           "load_yaml", "dump_yaml", "load_preset", "list_presets", "PRESET_DIR", "MODEL_CONFIGS", "migrate",
           "leaf_paths", "Restarts", "Hardware", "REMOVED", "RENAMED"]

PRESET_DIR = Path(__file__).parent / "presets"

MODEL_CONFIGS: Registry[type] = Registry("model")
"""Model name → its config dataclass, filled by :func:`wae.models.register_model` (so that a run config can be
typed from its model's name without this module importing the models)."""


@dataclass
class ModelConfig:
    """Base of every model's config; each model registers its own subclass."""

    latent_dim: int = 8

    def takes_cluster_targets(self) -> bool:
        """Whether the model trains towards a target cluster per datum (``loss(x, targets=…)``), which only restarts
        with ``train.restarts.select=ensemble`` provide; a model's config declares it (False here)."""
        return False


@dataclass
class DataConfig:
    dataset: str = "mnist-5k"
    """Training data set, ``NAME[:SPLIT]`` (``wae datasets`` lists them; split ``train`` unless given, e.g.
    ``svhn:train+extra``; ``npz:/path.npz`` and ``folder:/dir`` for your own)."""
    data_dir: str | None = None
    eval_dataset: str | None = None
    """The test data, e.g. ``mnist:test``; default: the training set's ``test`` split. A data set without one has
    no test metrics (the run is judged on its validation split, ``val/…``)."""
    eval_data_dir: str | None = None
    """Directory for the evaluation data set; default: ``data_dir``."""
    limit: int | None = None
    """Train on only this many examples (a random subset of what the validation split leaves, seeded by
    ``train.seed``)."""
    eval_limit: int | None = 10000
    """Use at most this many test examples (a fixed random subset)."""
    val_fraction: float = 0.1
    """Share of the training split held out as the validation split (carved with a fixed seed, so every training
    seed is scored on the same examples; 0: none), never trained on: per-epoch curves (``train.eval_every_epochs``)
    and the ``val/…`` metrics come from it. Choose settings on it, never on the test set."""
    evaluate_test: bool = True
    """Evaluate on the test split at the end. Set it false while choosing settings: the test set is then never read."""


RESTART_SELECT = ("tail", "confidence", "ensemble")
"""How ``train.restarts`` chooses its kept start (see :class:`Restarts`)."""

TEACHER_NAMES = ("umap-gmm",)
"""The partitions ``train.teacher`` accepts (``wae.training.teacher.TEACHERS``)."""


@dataclass
class Restarts:
    """Beyond the papers: several candidate starts, one kept by a label-free criterion (``count`` 1 = off)."""

    count: int = 1
    """Train this many candidate starts (different seeds; the first is ``train.seed``) for ``fraction`` of
    ``train.max_steps`` each, in memory, keep the best by ``select`` — no label is read — and continue it to the
    budget (its steps count towards ``max_steps``, the others' time towards ``max_minutes``; ``train/steps`` counts
    every start's steps, ``train/steps_kept_run`` the kept run's). Under ``max_minutes`` each candidate also stops at
    its share of the clock (``TrainConfig.candidate_minutes``), so that the starts cannot spend the budget on a slow
    machine. A mixture model settles on its partition of the data early, and keeps it."""
    fraction: float = 0.3
    """Each candidate start trains this fraction of ``train.max_steps`` (at least one step; pre-training included)."""
    select: str = "tail"
    """How the kept start is chosen (no label is read): ``tail``, the lowest mean training objective over a
    candidate's last quarter of steps; ``confidence`` (mixture models), the highest mean max_k q(k|x) on the same
    2,000 training examples for every candidate; ``ensemble`` (mixture models), the candidate whose assignments of
    all the training data agree best (NMI) with the consensus partition of all candidates' (k-means on their one-hot
    labels, ``evaluation.clustering.consensus_partition``), and the consensus, in the kept candidate's component ids,
    becomes the target of ``model.pseudo_label_weight`` for the rest of training: each start merges or splits
    different digits, and their consensus does so less than any one of them. ``train/restart_losses`` records the
    values (for ``confidence`` and ``ensemble``, minus the score: the lowest is kept in every case)."""


@dataclass
class Hardware:
    """Where and how a run executes (Lightning's Trainer arguments); a ``--resume`` may change them."""

    accelerator: str = "auto"
    devices: str = "1"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    """``bf16-mixed`` (autocast) on a GPU; changes numerics."""
    compile: bool = False
    """Compile each network in place with ``torch.compile`` (parameter names and exports unchanged)."""


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = -1
    max_minutes: float | None = None
    """Stop training after this many minutes (the main job uses 8.5, so that with its evaluation it fits in 10). A
    run the clock stops is not reproducible (a rerun with the same seed stops at another step):
    ``train/clock_stopped`` and ``train_note`` in metrics.json say so."""
    batch_size: int = 100
    lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    lr_milestones: list[int] = field(default_factory=list)
    """Epochs at which the learning rate changes (WAE MNIST: 30 and 50)."""
    lr_factors: list[float] = field(default_factory=list)
    """Multipliers of the initial lr that take effect at each milestone (WAE MNIST: 0.5 and 0.1)."""
    pretrain_steps: int = 0
    """Encoder pre-training steps before the main objective (0 = off)."""
    restarts: Restarts = field(default_factory=Restarts)
    teacher: str | None = None
    """Beyond the papers (null = off): a label-free partition of the training data computed before training
    (``umap-gmm``: UMAP → Gaussian mixture on the inputs). Its cluster shares become the prior's weights p(k) and its
    clusters the targets of ``model.pseudo_label_weight``, for every restart candidate and the kept run
    (``wae.training.teacher``). Skipped, with a warning, when the data are streamed or umap-learn is missing."""
    seed: int = 0
    hardware: Hardware = field(default_factory=Hardware)
    log_every: int = 10
    checkpoint_every_minutes: float = 5.0
    on_nan: str = "stop"
    """``stop`` (default: keep the last good checkpoint and exit ≠ 0) or ``skip`` (drop the bad batch)."""
    eval_every_epochs: int = 0
    """Compute validation metrics (``val/…``) every N epochs during training (0 = only at the end)."""
    sample_metrics: list[str] = field(default_factory=lambda: ["component_purity"])
    """Sample-quality metrics of the final evaluation (``wae evaluate --metrics`` lists them; those that do not apply
    are skipped): by default the class purity of each mixture component's samples."""
    figures: bool = True

    @property
    def candidate_steps(self) -> int:
        """Steps of each candidate start under ``restarts``: ``restarts.fraction`` of ``max_steps`` (at least 1)."""
        if self.max_steps <= 0:
            return 0
        return max(1, round(self.restarts.fraction * self.max_steps))

    @property
    def candidate_minutes(self) -> float | None:
        """The clock of each candidate start under ``restarts`` and ``max_minutes`` (None: no clock): the share of
        ``max_minutes`` that its steps are of all steps trained, ``f / (1 + (count − 1) f)`` with ``f`` the
        ``restarts.fraction`` (count 3, fraction 0.3: 3/16 each, the kept run the remaining 7/16). A machine fast
        enough for the steps never meets it; on a slower one every part of the run shrinks alike."""
        if not self.max_minutes or self.restarts.count <= 1:
            return None
        f = self.restarts.fraction
        return self.max_minutes * f / (1 + (self.restarts.count - 1) * f)


@dataclass
class RunConfig:
    model: str = "gm-wae"
    model_config: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # --- dict / YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "model": {"name": self.model, **to_dict(self.model_config)},
            "data": to_dict(self.data),
            "train": to_dict(self.train),
        }

    @classmethod
    def from_dict(cls, d: dict, model_config_cls: type | None = None) -> "RunConfig":
        """Type-check a mapping into a run config. ``model_config_cls`` is the model's config class (default: the
        one registered for ``model.name``)."""
        if not isinstance(d, dict):
            raise ConfigError("a run config must be a mapping with keys model, data, train")
        unknown = set(d) - {"model", "data", "train"}
        if unknown:
            raise ConfigError(f"unknown config section(s) {_names(unknown)}; known: model, data, train")
        m = d.get("model") or {}
        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError("config section 'model' needs a 'name' (e.g. wae-mmd, gm-wae)")
        mdict = dict(m)
        name = mdict.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"model.name must be a string, got {_short(name)}")
        config_cls = model_config_cls or MODEL_CONFIGS.get(name)
        return cls(
            model=name,
            model_config=from_dict(config_cls, mdict, "model"),
            data=from_dict(DataConfig, d.get("data") or {}, "data"),
            train=from_dict(TrainConfig, d.get("train") or {}, "train"),
        )

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    @classmethod
    def from_yaml(cls, text: str) -> "RunConfig":
        return cls.from_dict(safe_yaml(text, "config"))

    def validate(self) -> "RunConfig":
        t = self.train
        r = t.restarts
        checks = [
            (t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}" + (": 0 epochs would export an untrained "
                                                                          "model" if t.epochs == 0 else "")),
            (t.batch_size >= 2, f"train.batch_size must be >= 2 (MMD needs pairs), got {t.batch_size}"),
            (t.lr > 0 and math.isfinite(t.lr), f"train.lr must be a positive number, got {t.lr}"),
            (len(t.lr_milestones) == len(t.lr_factors), "train.lr_milestones and train.lr_factors differ in length"),
            (t.on_nan in ("stop", "skip"), f"train.on_nan must be 'stop' or 'skip', got {_short(t.on_nan)}"),
            (t.pretrain_steps >= 0, "train.pretrain_steps must be >= 0"),
            (1 <= r.count <= 100, f"train.restarts.count must be from 1 to 100, got {r.count}"),
            (0 < r.fraction < 1, f"train.restarts.fraction must be in (0, 1), got {r.fraction}"),
            (r.select in RESTART_SELECT,
             f"train.restarts.select must be one of {RESTART_SELECT}, got {r.select!r}"),
            (r.count == 1 or t.max_steps > 0,
             "train.restarts.count > 1 needs a train.max_steps to take train.restarts.fraction of"),
            (r.count == 1 or t.max_steps < 0 or t.candidate_steps < t.max_steps,
             f"train.restarts.count > 1 needs candidate starts shorter than train.max_steps, got {t.candidate_steps} "
             f"and {t.max_steps} (--set restarts.count=1 turns restarts off)"),
            (not self.model_config.takes_cluster_targets() or (r.count > 1 and r.select == "ensemble")
             or t.teacher is not None,
             ("model.pseudo_label_weight needs the targets that train.teacher or train.restarts.select=ensemble with "
              f"train.restarts.count > 1 provides (got select={r.select}, count={r.count})")),
            (t.teacher is None or t.teacher in TEACHER_NAMES,
             f"train.teacher must be null or one of {TEACHER_NAMES}, got {_short(t.teacher)}"),
            (0.0 <= self.data.val_fraction < 1.0,
             f"data.val_fraction must be in [0, 1), got {self.data.val_fraction}"),
            (self.data.limit is None or self.data.limit >= 1, f"data.limit must be >= 1, got {self.data.limit}"),
            (self.data.eval_limit is None or self.data.eval_limit >= 1,
             f"data.eval_limit must be >= 1 (or null: every test example), got {self.data.eval_limit}"),
            (0 <= t.seed <= MAX_SEED, f"train.seed must be an integer from 0 to {MAX_SEED}, got {_short(t.seed)}"),
            (t.max_steps == -1 or t.max_steps >= 1,
             f"train.max_steps must be -1 (no limit) or >= 1, got {t.max_steps}: 0 steps would export an untrained "
             "model"),
            (t.max_minutes is None or (t.max_minutes > 0 and math.isfinite(t.max_minutes)),
             f"train.max_minutes must be a positive number of minutes (or null: no limit), got {t.max_minutes}"),
            (t.checkpoint_every_minutes >= 0 and math.isfinite(t.checkpoint_every_minutes),
             f"train.checkpoint_every_minutes must be >= 0 (0: only at epoch boundaries), got "
             f"{t.checkpoint_every_minutes}"),
            (t.log_every >= 1, f"train.log_every must be >= 1, got {t.log_every}"),
            (t.hardware.num_nodes >= 1, f"train.hardware.num_nodes must be >= 1, got {t.hardware.num_nodes}"),
            (t.eval_every_epochs >= 0, f"train.eval_every_epochs must be >= 0, got {t.eval_every_epochs}"),
            (self.model_config.latent_dim >= 1, "model.latent_dim must be >= 1"),
        ]
        for f in fields(self.model_config):  # network width multipliers
            if f.name == "width" or f.name.endswith("_width"):
                v = getattr(self.model_config, f.name)
                if isinstance(v, (int, float)) and not (v > 0 and math.isfinite(v)):
                    checks.append((False, f"model.{f.name} must be a positive number (a width multiplier), got {v}"))
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        return self


MAX_SEED = 2 ** 32 - 1
"""Largest seed: NumPy (and Lightning's ``seed_everything``) take seeds from 0 to 2^32 − 1."""

def from_dict(cls, d: dict, where: str = ""):
    """Build dataclass ``cls`` from a mapping, type-checking every value; unknown keys are errors (a key of
    :data:`REMOVED` with its neutral value is dropped; a key of :data:`RENAMED` is refused with its new name)."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    for k, v in d.items():
        key = f"{where}.{k}" if where else str(k)
        grouped = k in names and dataclasses.is_dataclass(hints[k]) and not isinstance(v, dict)
        if key in RENAMED and (k not in names or grouped):
            raise ConfigError(f"{key} was renamed to {RENAMED[key]}")
    d = drop_removed(d, names, where, cls)
    unknown = set(d) - names
    if unknown:
        raise ConfigError(
            f"unknown key(s) {_names(unknown)} in {where or cls.__name__}; "
            f"known: {', '.join(sorted(names))}"
        )
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k, from_dict) for k, v in d.items()}
    return cls(**kwargs)


def deep_update(base: dict, upd: dict) -> dict:
    out = dict(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = v
    return out


def leaf_paths(cls, prefix: str = "") -> list[str]:
    """The dotted paths of dataclass ``cls``'s settings, nested groups expanded (``restarts.count``, …)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.init and dataclasses.is_dataclass(hints[f.name]):
            out += leaf_paths(hints[f.name], f"{prefix}{f.name}.")
        elif f.init:
            out.append(prefix + f.name)
    return out


def apply_overrides(d: dict, overrides: list[str], model_cls: type) -> dict:
    """Apply ``key=value`` overrides to a run dict. Keys are ``section.path`` (``train.restarts.count``) or the path
    within its section when that is unambiguous across the sections (``lr`` → ``train.lr``; ``consistency.weight``
    → ``model.consistency.weight``). Values are parsed as YAML scalars/lists and type-checked later by
    :meth:`RunConfig.from_dict`."""
    d = copy.deepcopy(d)
    sections = {"model": set(leaf_paths(model_cls)) | {"name"}, "data": set(leaf_paths(DataConfig)),
                "train": set(leaf_paths(TrainConfig))}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {_short(item)}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if len(key) > 100:
            raise ConfigError(f"--set {_short(key)}: unknown key")
        try:
            value = safe_yaml(raw, f"--set {key}") if raw.strip() else ""
        except ConfigError:
            value = raw
        sec, _, rest = key.partition(".")
        if sec in sections and rest:
            if rest not in sections[sec]:
                _refuse_key(key, [key], f"unknown key {_short(rest)} in {sec}; known: "
                            f"{', '.join(sorted(sections[sec]))}")
            path = rest
        else:
            hits = [s for s, names in sections.items() if key in names]
            if not hits:
                _refuse_key(key, [f"{s}.{key}" for s in sections],
                            "unknown key; use section.key with one of the keys `wae config` shows")
            if len(hits) > 1:
                raise ConfigError(f"--set {key}: ambiguous, say {' or '.join(h + '.' + key for h in hits)}")
            sec, path = hits[0], key
        if d.get(sec) is None:
            d[sec] = {}
        elif not isinstance(d[sec], dict):
            raise ConfigError(f"config section {sec!r} must be a mapping of keys to values, got "
                              f"{type(d[sec]).__name__} {_short(d[sec])}")
        node = d[sec]
        *groups, name = path.split(".")
        for g in groups:
            if not isinstance(node.get(g), dict):
                node[g] = {}
            node = node[g]
        node[name] = value
    return d


def _refuse_key(key: str, full_keys: list[str], unknown: str) -> typing.NoReturn:
    for full in full_keys:
        if full in RENAMED:
            raise ConfigError(f"--set {key}: {full} was renamed to {RENAMED[full]}")
        if full in REMOVED:
            raise ConfigError(f"--set {key}: {full} was removed (it lost on validation or went unused; "
                              "benchmarks/README.md)")
    raise ConfigError(f"--set {key}: {unknown}")


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_summary(name: str) -> str:
    """The preset file's first comment line (what it is), without the ``#``; empty if it has none."""
    p = PRESET_DIR / f"{name}.yaml"
    try:
        first = p.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def load_preset(name: str, _chain: tuple[str, ...] = ()) -> dict:
    """The run dict of preset ``name``. A preset that says ``base: OTHER`` is OTHER's with its own sections laid over
    it key by key, so it lists only what differs (``null`` removes a setting, e.g. the base's clock)."""
    if name in _chain:
        raise ConfigError(f"preset {name!r} inherits from itself: {' → '.join((*_chain, name))}")
    p = PRESET_DIR / f"{name}.yaml"
    if not p.exists():
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(list_presets())}")
    d = load_yaml(p)
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise ConfigError(f"preset {name!r}: base must be a preset's name, got {_short(base)}")
    return deep_update(load_preset(base, (*_chain, name)), d)
