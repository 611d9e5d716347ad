"""The paper's claims in miniature, checked on a results directory: `utabench claims`, run-all's closing verdict and
the slow end-to-end test all call `check`, so the thresholds live here and nowhere else.

Each claim finds its backbones by what the records say they are, not by name: the teacher is the backbone utabench
pretrained with objective `clip`, the students those of `uta`, `mim`, `fd`, `uta+mim` (outside the ablations: Tables
7-11, and students without a positional embedding), UTA† the `clip-ft` one (where a results directory has several of one
objective, the first by name), and "random init" the best of the backbones evaluated without weights on the same task
and dataset (the strictest control); the validation claim (paper A.3 / Fig. 4) reads every backbone whose pretraining
logged a validation loss (`pretrain.validation`, a config's `validation` block). A claim whose records are missing is
`not run`; one that the records contradict is FAIL, with the figures and the margin (how far the figure is past its bar;
negative: short).
Block-R's uniformity needs no records: it is measured on the mask generator itself (paper Fig. 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import pandas as pd

from utabench.pretrain.masking import MaskGenerator, MaskSpec, location_probability
from utabench.pretrain.table_pe import pos_embed_ablation
from utabench.pretrain.tables import ABLATION_TABLES

TEACHER_MIN_TOP1 = 80.0  # the world teacher's IN-1K zero-shot top-1 (10 classes: chance 10)
TEACHER_RECALL_OVER_RANDOM = 3.0  # mean retrieval recall, times the best random init's
TEACHER_IMAGE_R1_OVER_CHANCE = 3.0  # image R@1 on each retrieval set, times chance (1 / images)
UTA_SHARE_OF_TEACHER = 0.9  # the UTA student's zero-shot top-1, as a share of its teacher's (paper: 75.0 / 79.3)
MIM_BELOW_UTA = 15.0  # points of zero-shot top-1 the MIM student stays under the UTA student
UTA_FLOPS_OF_FD = (0.5, 0.7)  # the UTA student's training FLOPs per image over FD's (paper Table 6: 0.6)
DAGGER_OVER_UTA = 3.0  # points of zero-shot top-1 contrastive fine-tuning adds (paper Table 1: +1 to +2 at scale)
FT_UTA_OVER_MIM = 5.0  # ImageNet fine-tuning top-1: UTA over MIM, points
FT_UTA_OVER_RANDOM = 30.0  # ... UTA over random init, points
DENSE_OVER_RANDOM = 3.0  # detection box / mask AP and segmentation mIoU: UTA over random init, points
LLAVA_OVER_RANDOM = 10.0  # LLaVA-Bench overall: each trained encoder over random init, points
PROBE_MIM_OVER_RANDOM = 10.0  # linear-probe top-1 on the world's ImageNet (wds export): MIM student over random init
BLOCK_R_MAX_OVER_MIN = 1.1  # Block-R's masking location probability, max / min over the grid (Block: > 5)
# paper A.3 / Fig. 4: from the second validation point after step 0 to the last, the validation loss (a negative
# cosine) falls by at least this much, and by at least this share of the training loss's fall over the same points
# (world seed 0: 0.0998 and 0.98 of the training loss's 0.1015)
VALIDATION_MIN_FALL = 0.02
VALIDATION_SHARE_OF_TRAINING_FALL = 0.5

PASS, FAIL, NOT_RUN = "PASS", "FAIL", "not run"


@dataclass
class Verdict:
    claim: str
    status: str
    detail: str

    def line(self) -> str:
        return f"{self.status:8s} {self.claim}: {self.detail}"


class Records:
    """What the claims read from a results directory's records."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame if not frame.empty and "status" in frame else pd.DataFrame(
            columns=["backbone", "task", "dataset_type", "status"])
        self.done = self.frame[self.frame.status == "complete"]

    def by_objective(self, objective: str) -> List[str]:
        """The backbones utabench pretrained with `objective`, outside the ablations (Tables 7-11, and students
        pretrained without a positional embedding)."""
        if "pretrain.objective" not in self.frame:
            return []
        hits = self.frame[self.frame["pretrain.objective"] == objective]
        if "pretrain.paper.table" in hits:
            hits = hits[~hits["pretrain.paper.table"].isin([*ABLATION_TABLES, *map(str, ABLATION_TABLES)])]
        hits = hits[pd.Series([pos_embed_ablation(row) is None for _, row in hits.iterrows()], index=hits.index,
                              dtype=bool)]
        return sorted(set(hits.backbone))

    def validation_curves(self) -> Dict[str, Dict[str, list]]:
        """{backbone: {steps, loss, train_loss}} of the backbones whose pretraining logged a validation loss."""
        columns = [f"pretrain.validation.{key}" for key in ("steps", "loss", "train_loss")]
        if not set(columns) <= set(self.frame.columns):
            return {}
        out: Dict[str, Dict[str, list]] = {}
        for _, row in self.frame.sort_values("backbone").iterrows():
            if row.backbone not in out and isinstance(row[columns[0]], list):
                out[row.backbone] = {key: list(row[c]) for key, c in zip(("steps", "loss", "train_loss"), columns)}
        return out

    def random_init(self) -> List[str]:
        """Backbones evaluated without weights (and not pretrained by utabench)."""
        if "provenance.random_init_seed" not in self.frame:
            return []
        hits = self.frame[self.frame["provenance.random_init_seed"].notna()]
        if "pretrain.objective" in hits:
            hits = hits[hits["pretrain.objective"].isna()]
        return sorted(set(hits.backbone))

    def field(self, backbone: str, task: str, dataset_type: str, name: str):
        """A field of the complete record of (backbone, task, dataset type); None without one."""
        hit = self.done[(self.done.backbone == backbone) & (self.done.task == task)
                        & (self.done.dataset_type == dataset_type)]
        return None if hit.empty or name not in hit or pd.isna(hit.iloc[0][name]) else hit.iloc[0][name]

    def metric(self, backbone: str, task: str, dataset_type: str, metric: str) -> Optional[float]:
        value = self.field(backbone, task, dataset_type, f"metrics.{metric}")
        return None if value is None else float(value)

    def mean_recall(self, backbone: str) -> Optional[float]:
        hits = self.done[(self.done.backbone == backbone) & (self.done.task == "retrieval")]
        columns = [c for c in hits.columns if c.startswith("metrics.") and c.endswith(("_r1", "_r5", "_r10"))]
        values = [float(v) for c in columns for v in hits[c] if pd.notna(v)]
        return sum(values) / len(values) if values else None

    def best_random(self, task: str, dataset_type: str, metric: str) -> Optional[tuple]:
        """(value, backbone) of the best random-init backbone on (task, dataset type)."""
        found = [(self.metric(b, task, dataset_type, metric), b) for b in self.random_init()]
        found = [item for item in found if item[0] is not None]
        return max(found) if found else None


def _bar(claim: str, what: str, value: Optional[float], bar: Optional[float], bar_text: str,
         missing: str = "no record to compare it with", at_least: bool = False) -> Verdict:
    """PASS when `value` is above `bar` (`at_least`: or equal; `bar_text` says what the bar is); `not run` without
    either, saying which."""
    if value is None:
        return Verdict(claim, NOT_RUN, f"{what}: no record")
    if bar is None:
        return Verdict(claim, NOT_RUN, f"{what} {value:.2f}: {missing}")
    status = PASS if value > bar or (at_least and value == bar) else FAIL
    return Verdict(claim, status, f"{what} {value:.2f} {'>=' if at_least else '>'} {bar_text} = {bar:.2f} (margin "
                   f"{value - bar:+.2f})")


def _one(records: Records, objective: str) -> Optional[str]:
    found = records.by_objective(objective)
    return found[0] if found else None


def _plus(value: Optional[float], points: float) -> Optional[float]:
    return None if value is None else value + points


def _teacher_learned(r: Records) -> List[Verdict]:
    teacher = _one(r, "clip")
    top1 = r.metric(teacher, "zeroshot-classification", "imagenet", "top1") if teacher else None
    out = [_bar("teacher zero-shot", f"{teacher} IN-1K zero-shot top-1", top1, TEACHER_MIN_TOP1,
                f"{TEACHER_MIN_TOP1:g}", at_least=True)]
    random = [(r.mean_recall(b), b) for b in r.random_init()]
    random = max([item for item in random if item[0] is not None], default=None)
    recall = r.mean_recall(teacher) if teacher else None
    out.append(_bar("teacher retrieval", f"{teacher} mean retrieval recall", recall,
                    random and TEACHER_RECALL_OVER_RANDOM * random[0],
                    f"{TEACHER_RECALL_OVER_RANDOM:g} x {random[1]}'s {random[0]:.2f}" if random else ""))
    for kind in ("flickr30k", "coco"):
        images = r.field(teacher, "retrieval", kind, "provenance.dataset.num_images") if teacher else None
        r1 = r.metric(teacher, "retrieval", kind, "image_r1") if teacher else None
        chance = 100.0 / float(images) if images else None
        out.append(_bar(f"teacher {kind} image R@1", f"{teacher} image R@1", r1,
                        chance and TEACHER_IMAGE_R1_OVER_CHANCE * chance,
                        f"{TEACHER_IMAGE_R1_OVER_CHANCE:g} x chance {chance:.2f}" if chance else ""))
    return out


def _students(r: Records) -> List[Verdict]:
    teacher, uta, mim = _one(r, "clip"), _one(r, "uta"), _one(r, "mim")
    zs = {b: r.metric(b, "zeroshot-classification", "imagenet", "top1") for b in (teacher, uta, mim) if b}
    out = [_bar("UTA >= 90% of teacher", f"{uta} zero-shot top-1", zs.get(uta),
                zs.get(teacher) and UTA_SHARE_OF_TEACHER * zs[teacher],
                f"{UTA_SHARE_OF_TEACHER:g} x {teacher}'s {zs.get(teacher) or 0:.2f}", at_least=True),
           _bar("MIM far under UTA", f"{uta} zero-shot top-1", zs.get(uta),
                _plus(zs.get(mim), MIM_BELOW_UTA), f"{mim}'s {zs.get(mim) or 0:.2f} + {MIM_BELOW_UTA:g}")]
    both = _one(r, "uta+mim")
    mixed = r.metric(both, "zeroshot-classification", "imagenet", "top1") if both else None
    if None in (mixed, zs.get(mim), zs.get(teacher)):
        out.append(Verdict("UTA+MIM between MIM and teacher", NOT_RUN, "no UTA+MIM, MIM and teacher records"))
    else:
        inside = zs[mim] < mixed <= zs[teacher]
        out.append(Verdict("UTA+MIM between MIM and teacher", PASS if inside else FAIL,
                           f"{mim} {zs[mim]:.2f} < {both} {mixed:.2f} <= {teacher} {zs[teacher]:.2f} (margin "
                           f"{min(mixed - zs[mim], zs[teacher] - mixed):+.2f})"))
    fd = _one(r, "fd")
    flops = {}
    if "pretrain.flops.student_per_image" in r.frame:
        for b in (uta, fd):
            rows = r.frame[r.frame.backbone == b]["pretrain.flops.student_per_image"].dropna() if b else []
            flops[b] = float(rows.iloc[0]) if len(rows) else None
    ratio = flops[uta] / flops[fd] if flops.get(uta) and flops.get(fd) else None
    low, high = UTA_FLOPS_OF_FD
    if ratio is None:
        out.append(Verdict("UTA FLOPs ~0.6x FD", NOT_RUN, "no UTA and FD students with counted FLOPs"))
    else:
        out.append(Verdict("UTA FLOPs ~0.6x FD", PASS if low <= ratio <= high else FAIL,
                           f"{uta} / {fd} training FLOPs per image {ratio:.3f} in [{low:g}, {high:g}] (margin "
                           f"{min(ratio - low, high - ratio):+.3f})"))
    return out


def _dagger(r: Records) -> List[Verdict]:
    uta, dagger = _one(r, "uta"), _one(r, "clip-ft")
    zs = {b: r.metric(b, "zeroshot-classification", "imagenet", "top1") for b in (uta, dagger) if b}
    recall = {b: r.mean_recall(b) for b in (uta, dagger) if b}
    return [_bar("UTA† above UTA (zero-shot)", f"{dagger} zero-shot top-1", zs.get(dagger),
                 _plus(zs.get(uta), DAGGER_OVER_UTA),
                 f"{uta}'s {zs.get(uta) or 0:.2f} + {DAGGER_OVER_UTA:g}"),
            _bar("UTA† above UTA (retrieval)", f"{dagger} mean retrieval recall", recall.get(dagger),
                 recall.get(uta), f"{uta}'s")]


def _finetuning(r: Records) -> List[Verdict]:
    uta, mim = _one(r, "uta"), _one(r, "mim")
    ft = {b: r.metric(b, "finetune-classification", "imagenet", "top1") for b in (uta, mim) if b}
    random = r.best_random("finetune-classification", "imagenet", "top1")
    return [_bar("fine-tuning: UTA over MIM", f"{uta} fine-tuned top-1", ft.get(uta),
                 _plus(ft.get(mim), FT_UTA_OVER_MIM),
                 f"{mim}'s {ft.get(mim) or 0:.2f} + {FT_UTA_OVER_MIM:g}"),
            _bar("fine-tuning: MIM over random init", f"{mim} fine-tuned top-1", ft.get(mim),
                 random and random[0], f"{random[1]}'s" if random else ""),
            _bar("fine-tuning: UTA far over random init", f"{uta} fine-tuned top-1", ft.get(uta),
                 _plus(random and random[0], FT_UTA_OVER_RANDOM),
                 f"{random[1]}'s {random[0]:.2f} + {FT_UTA_OVER_RANDOM:g}" if random else "")]


def _dense(r: Records) -> List[Verdict]:
    uta = _one(r, "uta")
    out = []
    for task, kind, metric in (("detection", "coco", "box_ap"), ("detection", "coco", "mask_ap"),
                               ("detection", "lvis", "box_ap"), ("detection", "lvis", "mask_ap"),
                               ("segmentation", "ade20k", "mIoU")):
        random = r.best_random(task, kind, metric)
        out.append(_bar(f"{kind} {metric}: UTA over random init", f"{uta} {metric}",
                        r.metric(uta, task, kind, metric) if uta else None,
                        _plus(random and random[0], DENSE_OVER_RANDOM),
                        f"{random[1]}'s {random[0]:.2f} + {DENSE_OVER_RANDOM:g}" if random else "",
                        "no random-init record to compare it with (run configs/world-dense-random.yaml into the same "
                        "results)"))
    return out


def _llava(r: Records) -> List[Verdict]:
    random = r.best_random("llava-bench", "llava-bench", "overall")
    trained = [b for b in (_one(r, "clip"), _one(r, "uta"), _one(r, "clip-ft")) if b]
    scored = [b for b in trained if r.metric(b, "llava-bench", "llava-bench", "overall") is not None]
    if not scored or random is None:
        return [Verdict("LLaVA: trained encoders over random init", NOT_RUN,
                        "LLaVA-Bench records for a trained encoder and a random init")]
    return [_bar(f"LLaVA: {b} over random init", f"{b} LLaVA-Bench overall",
                 r.metric(b, "llava-bench", "llava-bench", "overall"), random[0] + LLAVA_OVER_RANDOM,
                 f"{random[1]}'s {random[0]:.2f} + {LLAVA_OVER_RANDOM:g}") for b in scored]


def _probe(r: Records) -> List[Verdict]:
    """A linear probe sees what zero-shot cannot: the MIM student's features, without a text tower, against random
    init's."""
    mim = _one(r, "mim")
    random = r.best_random("linear-probe", "wds", "top1")
    return [_bar("linear probe: MIM over random init", f"{mim} linear-probe top-1",
                 r.metric(mim, "linear-probe", "wds", "top1") if mim else None,
                 _plus(random and random[0], PROBE_MIM_OVER_RANDOM),
                 f"{random[1]}'s {random[0]:.2f} + {PROBE_MIM_OVER_RANDOM:g}" if random else "")]


def _validation(r: Records) -> List[Verdict]:
    """Paper A.3 / Fig. 4: both losses fall over pretraining, the held-out one with the training one (no
    over-fitting). Each pretrained backbone whose record carries a validation curve (`pretrain.validation`). The
    training loss at a point is the mean over the steps since the previous one, so the first point's averages the
    steps from the untrained student through the warm-up and lags its validation point (world: -0.72 against
    -0.82); the comparison starts at the second point, where both describe the same stretch of training."""
    claim = "validation loss falls with the training loss"
    curves = r.validation_curves()
    if not curves:
        return [Verdict(claim, NOT_RUN, "no pretraining run with a validation loss (configs/world-validation.yaml)")]
    out = []
    for backbone, curve in curves.items():
        points = [(s, v, t) for s, v, t in zip(curve["steps"], curve["loss"], curve["train_loss"]) if t is not None]
        points = points[1:]  # from the second point after step 0 (the docstring)
        if len(points) < 2:
            out.append(Verdict(f"{backbone}: {claim}", NOT_RUN, "fewer than three validation points after step 0"))
            continue
        (first, v0, t0), (last, v1, t1) = points[0], points[-1]
        fell, trained = v0 - v1, t0 - t1
        bar = max(VALIDATION_MIN_FALL, VALIDATION_SHARE_OF_TRAINING_FALL * trained)
        out.append(Verdict(f"{backbone}: {claim}", PASS if fell >= bar else FAIL,
                           f"validation loss {v0:.4f} at step {first} -> {v1:.4f} at step {last}, fell {fell:.4f} >= "
                           f"max({VALIDATION_MIN_FALL:g}, {VALIDATION_SHARE_OF_TRAINING_FALL:g} x the training "
                           f"loss's fall {t0:.4f} -> {t1:.4f} = {trained:.4f}) = {bar:.4f} (margin {fell - bar:+.4f})"))
    return out


def _block_r(_: Records) -> List[Verdict]:

    prob = location_probability(MaskGenerator((16, 16), MaskSpec("block-r", 0.5)), 5000, 0)
    ratio = float(prob.max() / prob.min())
    return [Verdict("Block-R masking uniform", PASS if ratio <= BLOCK_R_MAX_OVER_MIN else FAIL,
                    f"location probability max / min {ratio:.3f} <= {BLOCK_R_MAX_OVER_MIN:g} over 5000 masks of a "
                    f"16 x 16 grid at ratio 0.5 (margin {BLOCK_R_MAX_OVER_MIN - ratio:+.3f})")]


CLAIMS: List[Callable[[Records], List[Verdict]]] = [_teacher_learned, _students, _dagger, _finetuning, _dense,
                                                    _llava, _probe, _validation, _block_r]


def check(frame: pd.DataFrame) -> List[Verdict]:
    """Every claim's verdict on a results directory's records (`store.load_results`)."""
    records = Records(frame)
    return [verdict for claim in CLAIMS for verdict in claim(records)]


def summary(verdicts: List[Verdict]) -> str:
    """One line: how many claims passed, failed, were not run; the failed ones named."""
    failed = [v.claim for v in verdicts if v.status == FAIL]
    counts = {status: sum(v.status == status for v in verdicts) for status in (PASS, FAIL, NOT_RUN)}
    return (f"claims: {counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[NOT_RUN]} not run"
            + (f" (failed: {'; '.join(failed)})" if failed else ""))
