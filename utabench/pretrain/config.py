"""Pretraining configurations (YAML): one file says what is trained, from what, on what data, with which optimiser.

    base: uta-b14.yaml                    # optional: start from another config (a path, or one of configs/pretrain/)
    paper: {table: 6, row: UTA}           # optional: the published row this run reproduces
    objective: uta                        # uta | mim | fd | uta+mim (distillation), clip (image-text contrastive)
                                          # or clip-ft (contrastive fine-tuning of a student, paper A.1)
                                          # or text-uta (a text tower from a CLIP's text tower, paper sec. 4)
    student: {model: B-14, drop_path: 0.1}                 # a `uta` model config (distillation)
    teacher: {spec: "clip:EVA01-g-14", checkpoint: ...}    # any registered backbone with joint-space tokens
    model: ViT-B-16                                        # an open_clip config (objective clip; text-uta:
                                                           # the student, the teacher's image tower + its text)
    init: {spec: "uta:B-14", checkpoint: ...}              # the student to fine-tune (objective clip-ft), or a
                                                           # CLIP itself ({spec: "clip:ViT-L-14", ...}, paper A.4)
    contrastive: {temperature: 0.01, layer_decay: 0.75, patch_size: 16, lock_text: false}   # (clip-ft)
                                          # `mask: true`: only CLS + the patches `mask` keeps enter the image
                                          # tower while training (FLIP-style, paper A.4); evaluation sees them all
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
    validation: {holdout: 10000, every: 5000, mask: {type: random, ratio: 0.5}, batch_size: 256}   # optional

Every level is a schema: an unknown key (`optim: {epoch: 1}`) or a bad value is refused when the file is read.
Unset values take the defaults below: the UTA paper's (section 3, "Pre-training": batch 4096, 150 epochs, AdamW
with weight decay 0.05, 1 warm-up epoch to 1.5e-3, cosine to 1e-5, mask ratio 0.5 as for L; section 2.2: the block-wise
mask reversed with probability 0.5; A.1: the contrastive fine-tuning's temperature 0.01 and layer decay 0.75 for B),
BEiT's block-wise mask generator's (blocks of at least 16 patches, aspect ratio in [0.3, 1/0.3]) and, where the paper
says nothing (betas, eps, crop scale), decisions of ours (see `configs/pretrain/uta-b14.yaml`). `steps` /
`warmup_steps` in `optim` override the epoch counts (`optim` is the shared trainer's, `training/config.py`). The run
fingerprint (`training/fingerprint.py`) covers everything that changes the trained weights: it keys the cached run,
and a resume from another configuration's checkpoint is refused.

`validation` (distillation only; absent: no validation, and every fingerprint stays as it was) reports a validation
loss beside the training loss, as the paper's A.3 / Fig. 4 does for UTA-B, so over-fitting can be seen. `holdout`
images are drawn out of the training source (a draw seeded by `seed` over the source's sorted list,
`pretrain/data.py`'s `split_holdout`) and never trained on: the training set shrinks by that many, so the block
enters the run fingerprint (all of it: the curve is part of the cached run, so a change of `every` is another run).
Each held-out image has one fixed view, the training augmentation drawn once from (seed, its index), and one fixed
mask from `mask` (default: random at ratio 0.5, the paper's "for simplicity"), so every point scores the same
inputs. At step 0, every `every` steps and at the last step the student is scored on them in eval mode, without
gradients or the teacher-token cache, with the objective's loss (a mean per image); the point goes into the run's
`log.jsonl` as {step, validation_loss, train_loss} (`train_loss`: the mean training loss of the steps since the
previous point, none at step 0) and the whole curve into `final.json` and the `pretrain` info of the records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from utabench.backbones.factory import check_entry, parse_backbone_spec
from utabench.backbones.openclip import check_clip_model
from utabench.core.configfile import bundled_config, expand_env, read_yaml_mapping
from utabench.core.errors import UtabenchError
from utabench.core.published import published_table
from utabench.core.schema import Schema, check_keys, validated_dict
from utabench.pretrain.data import SOURCES
from utabench.pretrain.masking import MASKS
from utabench.pretrain.objectives import OBJECTIVES
from utabench.training.config import OptimConfig, deep_merge

Range = Tuple[PositiveFloat, PositiveFloat]


class PosEmbedConfig(Schema):
    """Which positional embeddings the student pretrains with (the ablation of Table 9, seed 000's Table 7).

    The paper removes "all the positional embedding in the ViT" for pre-training and, for fine-tuning, adds it back
    initialised to zero "to ensure that the initial state of fine-tuning is the same as the last state of
    pre-training". That sentence fits only a learned embedding: the absolute one. RoPE has no parameters to start at
    zero, so adding it back would change the function fine-tuning starts from. Decision: `absolute: false` alone is the
    ablation (the exported checkpoint carries a zero absolute embedding, which downstream fine-tuning learns); RoPE
    stays, and `rope: false` is the switch that removes it too, for pretraining and every downstream use alike (the
    export names a model config without RoPE)."""

    absolute: bool = True
    rope: bool = True


class StudentConfig(Schema):
    model: str = "B-14"  # a `uta` model config name or .json path
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    grad_checkpointing: bool = False
    pos_embed: Optional[PosEmbedConfig] = None  # unset: both, as every run before the ablation

    @model_validator(mode="after")
    def _both_is_unset(self):
        if self.pos_embed is not None and self.pos_embed.absolute and self.pos_embed.rope:
            self.pos_embed = None  # the same run as no setting: the same fingerprint
        return self


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


class ValidationMask(MaskConfig):
    type: Literal[tuple(MASKS.names())] = "random"  # the paper's validation masks: random, ratio 0.5 (A.3)


class ValidationConfig(Schema):
    """A validation loss on held-out images beside the training loss (paper A.3, Fig. 4; the module docstring)."""

    holdout: PositiveInt  # images taken out of the training source (a seeded draw), never trained on
    every: PositiveInt = 1000  # steps between validation points (and step 0 and the last step)
    mask: ValidationMask = ValidationMask()  # one fixed mask per held-out image
    batch_size: PositiveInt = 256  # of the validation pass (the loss is a mean per image: it does not change it)


class ContrastiveConfig(Schema):
    """Contrastive fine-tuning (objective clip-ft, paper A.1)."""

    # fixed, not learned; `init`: the one the student's text tower was trained at (its teacher's learned temperature)
    temperature: Union[PositiveFloat, Literal["init"]] = 0.01
    layer_decay: float = Field(0.75, gt=0.0, le=1.0)  # B 0.75, L 0.85
    text_layer_decay: Optional[float] = Field(None, gt=0.0, le=1.0)  # default: layer_decay
    lock_text: bool = False  # A.1 trains both towers
    patch_size: Optional[PositiveInt] = None  # convert the student's patch size first (B: 16)
    # true: train on CLS + the patches the config's `mask` block keeps (paper A.4's masked teacher fine-tuning);
    # unset (or false, the same run): every patch
    mask: Optional[bool] = None

    @model_validator(mode="after")
    def _unmasked_is_unset(self):
        if self.mask is False:
            self.mask = None  # the same run as no setting: the same fingerprint
        return self


class PaperAblation(Schema):
    """The published row a pretraining config reproduces, e.g. {table: 8, row: 'ratio 0.5'}."""

    table: Literal[6, 7, 8, 9, 10, 11]  # 9: positional embedding, 10: text encoder, 11: teacher comparison
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
    model: Optional[str] = None  # an open_clip model config (objective clip; the student of text-uta)
    init: Optional[Dict[str, Any]] = None  # the uta or clip entry contrastive fine-tuning starts from (clip-ft)
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
    validation: Optional[ValidationConfig] = None  # distillation: a held-out split's loss every so often

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
    if cfg["validation"] and OBJECTIVES.get(cfg["objective"]).recipe != "distill":
        raise UtabenchError(f"pretraining config {source}: validation applies to distillation (uta, mim, fd, "
                            f"uta+mim), not to objective {cfg['objective']}; remove it")
    if cfg["contrastive"]["mask"] and cfg["objective"] != "clip-ft":
        raise UtabenchError(f"pretraining config {source}: contrastive.mask applies to contrastive fine-tuning "
                            f"(objective clip-ft), not to objective {cfg['objective']}; remove it")
    if cfg["objective"] == "clip":
        if not cfg.get("model"):
            raise UtabenchError(f"pretraining config {source}: objective clip needs `model: <open_clip config>`")
    elif cfg["objective"] == "clip-ft":
        if not cfg.get("init"):
            raise UtabenchError(f"pretraining config {source}: objective clip-ft needs `init`, the uta backbone entry "
                                "it fine-tunes, e.g. {spec: 'uta:B-14', checkpoint: PATH} or {pretrain: "
                                "world-student.yaml, objective: uta}")
        family = init_family(cfg["init"])
        if family not in (None, "uta", "clip"):
            raise UtabenchError(f"pretraining config {source}: objective clip-ft fine-tunes a uta student or a clip "
                                f"model (paper A.4: the teacher itself), not a {family} backbone")
    elif cfg["objective"] == "text-uta":
        check_text_uta(cfg, source)
    elif not cfg.get("teacher"):
        raise UtabenchError(f"pretraining config {source}: objective {cfg['objective']} needs a `teacher` backbone "
                            "entry, e.g. {spec: 'clip:EVA01-g-14', checkpoint: PATH}")
    return cfg


def check_text_uta(cfg: Dict[str, Any], source: str) -> None:
    """Objective text-uta (pretrain/text_distill.py): a CLIP teacher, the student's open_clip config, random masks."""
    where = f"pretraining config {source}: objective text-uta"
    if not cfg.get("teacher") or not cfg.get("model"):
        raise UtabenchError(f"{where} needs `teacher` (the CLIP whose text tower teaches, e.g. {{spec: "
                            "'clip:EVA01-g-14', checkpoint: PATH}) and `model` (the student's open_clip config: the "
                            "teacher's image tower, the text tower it trains)")
    try:
        check_clip_model(str(cfg["model"]))
    except UtabenchError as exc:
        raise UtabenchError(f"{where}, model: {exc}") from None
    if cfg["mask"]["type"] != "random":
        raise UtabenchError(f"{where} masks words at random (paper section 4): `mask: {{type: random, ratio: R}}`, "
                            f"not {cfg['mask']['type']}")


def init_family(entry: Any) -> Optional[str]:
    """The backbone family of a clip-ft `init` entry (`uta`, `clip`); None for a `{pretrain: ...}` entry, known
    only once trained."""
    return None if is_pretrain_entry(entry) else parse_backbone_spec(entry, where="init").family


def load_pretrain_config(path: str, objective: Optional[str] = None) -> Dict[str, Any]:
    return build_config(read_raw(Path(path)), path, objective)
