"""Pretraining configurations (YAML): one file says what is trained, from what, on what data, with which optimiser.

    base: uta-b14.yaml                    # optional: start from another config (a path, or one of configs/pretrain/)
    paper: {table: 6, row: UTA}           # optional: the published row this run reproduces
    objective: uta                        # uta | mim | fd | uta+mim (distillation), clip (image-text contrastive)
                                          # or clip-ft (contrastive fine-tuning of a student, paper A.1)
    student: {model: B-14, drop_path: 0.1}                 # a `uta` model config (distillation)
    teacher: {spec: "clip:EVA01-g-14", checkpoint: ...}    # any registered backbone with joint-space tokens
    model: ViT-B-16                                        # an open_clip config (objective clip)
    init: {spec: "uta:B-14", checkpoint: ...}              # the student to fine-tune (objective clip-ft)
    contrastive: {temperature: 0.01, layer_decay: 0.75, patch_size: 16, lock_text: false}   # (clip-ft)
    data: {type: imagefolder, root: DIR}  # or {type: webdataset, shards: "dir/{00000..00099}.tar"}; crop
                                          # area `scale` and aspect `ratio` ranges, `hflip`
    mask: {type: block-r, ratio: 0.4, min_block: 16}
    optim: {batch_size: 4096, epochs: 150, lr: 1.5e-3, min_lr: 1.0e-5, warmup_epochs: 1, weight_decay: 0.05}
    precision: auto                       # bf16 autocast on GPU, fp32 on CPU
    checkpoint_every: 1000                # steps
    seed: 0
    teacher_cache: false                  # true: keep the teacher's tokens per epoch in <out>/../teacher-tokens, so
                                          # runs of other objectives or masks on the same data and teacher reuse
                                          # them (bit-identical; small runs only, see teacher_cache.py)
    threads: 1                            # optional: train with exactly this many torch CPU threads, whatever
                                          # --threads says, so a CPU run gives the same bits at any thread setting
                                          # or parallelism (default: the run's thread count)

Every level is a schema: an unknown key (`optim: {epoch: 1}`) or a bad value is refused when the file is read.
Unset values take the defaults below: the UTA paper's (section 3, "Pre-training": batch 4096, 150 epochs, AdamW
with weight decay 0.05, 1 warm-up epoch to 1.5e-3, cosine to 1e-5, mask ratio 0.5 as for L; section 2.2: the block-wise
mask reversed with probability 0.5; A.1: the contrastive fine-tuning's temperature 0.01 and layer decay 0.75 for B),
BEiT's block-wise mask generator's (blocks of at least 16 patches, aspect ratio in [0.3, 1/0.3]) and, where the paper
says nothing (betas, eps, crop scale), decisions of ours (see `configs/pretrain/uta-b14.yaml`). `steps` /
`warmup_steps` in `optim` override the epoch counts (`optim` is the shared trainer's, `training/config.py`). The run
fingerprint (`training/fingerprint.py`) covers everything that changes the trained weights: it keys the cached run,
and a resume from another configuration's checkpoint is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from utabench.backbones.factory import check_entry
from utabench.core.configfile import bundled_config, expand_env, read_yaml_mapping
from utabench.core.errors import UtabenchError
from utabench.core.published import published_table
from utabench.core.schema import Schema, check_keys, validated_dict
from utabench.pretrain.data import SOURCES
from utabench.pretrain.masking import MASKS
from utabench.pretrain.objectives import OBJECTIVES
from utabench.training.config import OptimConfig, deep_merge

Range = Tuple[PositiveFloat, PositiveFloat]


class StudentConfig(Schema):
    model: str = "B-14"  # a `uta` model config name or .json path
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    grad_checkpointing: bool = False


class DataConfig(Schema):
    type: Literal[tuple(SOURCES.names())] = "imagefolder"
    root: Optional[str] = None  # imagefolder
    shards: Optional[str] = None  # webdataset: a glob or dir/{00000..00099}.tar
    scale: Range = (0.4, 1.0)  # random-resized-crop area range
    ratio: Range = (0.75, 1.3333333)  # random-resized-crop aspect range
    hflip: bool = True

    @model_validator(mode="after")
    def _source(self):
        if self.type == "imagefolder" and not self.root:
            raise ValueError("an imagefolder source needs `root: DIR`")
        if self.type == "webdataset" and not self.shards:
            raise ValueError("a webdataset source needs `shards: 'dir/{00000..00099}.tar'` (or a glob)")
        if not self.scale[0] <= self.scale[1] <= 1.0 or not self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"crop ranges must be (low, high) with scale <= 1, got scale {self.scale}, ratio "
                             f"{self.ratio}")
        return self


class MaskConfig(Schema):
    type: Literal[tuple(MASKS.names())] = "block-r"
    ratio: float = Field(0.5, gt=0.0, lt=1.0)  # e.g. 0.4 (B) or 0.5 (L)
    min_block: PositiveInt = 16
    min_aspect: float = Field(0.3, gt=0.0, le=1.0)
    reverse_prob: float = Field(0.5, ge=0.0, le=1.0)


class ContrastiveConfig(Schema):
    """Contrastive fine-tuning (objective clip-ft, paper A.1)."""

    # fixed, not learned; `init`: the one the student's text tower was trained at (its teacher's learned temperature)
    temperature: Union[PositiveFloat, Literal["init"]] = 0.01
    layer_decay: float = Field(0.75, gt=0.0, le=1.0)  # B 0.75, L 0.85
    text_layer_decay: Optional[float] = Field(None, gt=0.0, le=1.0)  # default: layer_decay
    lock_text: bool = False  # A.1 trains both towers
    patch_size: Optional[PositiveInt] = None  # convert the student's patch size first (B: 16)


class PaperAblation(Schema):
    """The published row a pretraining config reproduces, e.g. {table: 8, row: 'ratio 0.5'}."""

    table: Literal[6, 7, 8]
    row: str

    @model_validator(mode="after")
    def _published(self):

        rows = list(published_table(f"paper_table{self.table}.csv")["config"])
        if self.row not in rows:
            raise ValueError(f"Table {self.table} has no row {self.row!r}; its rows: {', '.join(rows)}")
        return self


class PretrainConfig(Schema):
    objective: Literal[tuple(OBJECTIVES.names())] = "uta"
    student: StudentConfig = StudentConfig()
    teacher: Optional[Dict[str, Any]] = None  # a backbone entry (or a {pretrain: ...} entry)
    model: Optional[str] = None  # an open_clip model config (objective clip)
    init: Optional[Dict[str, Any]] = None  # the uta backbone entry contrastive fine-tuning starts from (clip-ft)
    contrastive: ContrastiveConfig = ContrastiveConfig()
    data: DataConfig
    mask: MaskConfig = MaskConfig()
    optim: OptimConfig = OptimConfig()
    precision: Literal["auto", "fp32", "amp_bf16"] = "auto"
    checkpoint_every: PositiveInt = 1000
    seed: NonNegativeInt = 0
    workers: NonNegativeInt = 4
    teacher_cache: bool = False  # distillation: keep the teacher's tokens per epoch for runs of other objectives
    threads: Optional[PositiveInt] = None  # torch CPU threads of the training (default: the run's)
    paper: Optional[PaperAblation] = None

    @field_validator("teacher", "init")
    @classmethod
    def _backbone(cls, value, info):
        if value is None:
            return None
        where = info.field_name
        return check_pretrain_entry(value, where) if is_pretrain_entry(value) else check_entry(value, where)


PRETRAIN_ENTRY_KEYS = ("name", "pretrain", "objective", "paper")


def is_pretrain_entry(entry: Any) -> bool:
    """A backbone entry that names a pretraining config (`{pretrain: world-student.yaml, objective: mim}`)."""
    return isinstance(entry, dict) and isinstance(entry.get("pretrain"), str)


def check_pretrain_entry(entry: Dict[str, Any], where: str) -> Dict[str, Any]:
    check_keys(entry, PRETRAIN_ENTRY_KEYS, where)
    if entry.get("objective") is not None and entry["objective"] not in OBJECTIVES.names():
        raise UtabenchError(f"{where}: objective {entry['objective']!r} is not one of "
                            f"{', '.join(OBJECTIVES.names())}")
    return entry


def config_path(name: str, relative_to: Optional[Path] = None) -> Path:
    """A pretraining config: a path (relative to the including file, if any) or one of configs/pretrain/."""
    for candidate in ((relative_to / name) if relative_to else None, Path(name), bundled_config(f"pretrain/{name}")):
        if candidate is not None and candidate.is_file():
            return candidate
    raise UtabenchError(f"pretraining config {name!r} is neither a file nor one of utabench/configs/pretrain/")


def read_raw(path: Path, seen: Tuple[Path, ...] = ()) -> Dict[str, Any]:
    """The YAML of a pretraining config with its `base:` chain merged in (the file's own keys win)."""
    raw = read_yaml_mapping(path, "pretraining config", "see utabench/configs/pretrain/")
    base = raw.pop("base", None)
    if base is None:
        return raw
    parent = config_path(str(base), path.parent)
    if parent.resolve() in seen:
        raise UtabenchError(f"pretraining config {path}: `base:` chain loops back to {parent}")
    return deep_merge(read_raw(parent, seen + (path.resolve(),)), raw)


def build_config(raw: Dict[str, Any], source: str = "<config>", objective: Optional[str] = None) -> Dict[str, Any]:
    raw = expand_env(dict(raw), source)
    if objective:
        raw["objective"] = objective
    cfg = validated_dict(PretrainConfig, raw, f"pretraining config {source}", defaults=True)
    if cfg["teacher_cache"] and OBJECTIVES.get(cfg["objective"]).recipe != "distill":
        raise UtabenchError(f"pretraining config {source}: teacher_cache applies to distillation (uta, mim, fd, "
                            f"uta+mim), not to objective {cfg['objective']}; remove it")
    if cfg["objective"] == "clip":
        if not cfg.get("model"):
            raise UtabenchError(f"pretraining config {source}: objective clip needs `model: <open_clip config>`")
    elif cfg["objective"] == "clip-ft":
        if not cfg.get("init"):
            raise UtabenchError(f"pretraining config {source}: objective clip-ft needs `init`, the uta backbone entry "
                                "it fine-tunes, e.g. {spec: 'uta:B-14', checkpoint: PATH} or {pretrain: "
                                "world-student.yaml, objective: uta}")
    elif not cfg.get("teacher"):
        raise UtabenchError(f"pretraining config {source}: objective {cfg['objective']} needs a `teacher` backbone "
                            "entry, e.g. {spec: 'clip:EVA01-g-14', checkpoint: PATH}")
    return cfg


def load_pretrain_config(path: str, objective: Optional[str] = None) -> Dict[str, Any]:
    return build_config(read_raw(Path(path)), path, objective)
