"""CLIP_benchmark's webdataset exports (the `wds_*` sets on the model hubs), read as published:

    ROOT/classnames.txt                          one class name per line (line i names label i)
    ROOT/zeroshot_classification_templates.txt   one template per line, with {c}
    ROOT/dataset_type.txt                        optional: classification (the default), multilabel or retrieval
    ROOT/<split>/nshards.txt                     the number of shards N
    ROOT/<split>/0.tar ... <N-1>.tar             samples <key>.<ext>: an image (.webp, .png, .jpg or .jpeg, the first
                                                 of these present) with its label (.cls, an ASCII integer), its
                                                 labels (.npy, multi-hot over the classes) or its captions (.txt,
                                                 one per line)

Members are grouped into samples by webdataset's own rule (`base_plus_ext`: the key is the path up to the first dot
of the file name). The shards are indexed once, and images are read by their offset in the tar, so a set of shards
takes the loaders, the distributed sampler, the fingerprint (over the shards' contents) and the feature cache that
image folders take. A shard that is missing, truncated or not a tar, a sample without an image or a label, a label
out of range and a class-name file with a blank line are each refused in one line.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from pydantic import Field
from webdataset.tariterators import base_plus_ext

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.classification import ClassificationSet
from utabench.datasets.images import TarMember, dataset_root, source_files
from utabench.datasets.retrieval import RetrievalSet
from utabench.datasets.vocab import read_templates
from utabench.datasets.wds_mirror import is_url, mirror

IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's order: the first present is the sample's image
KINDS = ("classification", "multilabel", "retrieval")
LAYOUT = "ROOT/{classnames.txt, zeroshot_classification_templates.txt, <split>/nshards.txt, <split>/<i>.tar}"


class WdsEntry(Schema):
    split: str = Field("test", description="the split folder read (default test)")
    mirror: Optional[str] = Field(None, description="where a set behind a URL root is downloaded (default "
                                  "$UTABENCH_CACHE/wds, else ~/.cache/utabench/wds)")
    classnames: Optional[str] = Field(None, description="class names, one per line (default ROOT/classnames.txt)")
    templates: Optional[str] = Field(None, description="templates with {c}, one per line or JSON (default "
                                     "ROOT/zeroshot_classification_templates.txt, else OpenAI's 80)")


class WdsClassificationSet(ClassificationSet):
    metadata: Optional[np.ndarray] = None  # (samples, fields) from each sample's .npy, where the set has them
    multi_hot: Optional[np.ndarray] = None  # a multilabel set: (samples, classes); each sample's label is its row

    @property
    def files(self) -> List[Path]:
        return source_files(path for path, _ in self.samples)


class WdsRetrievalSet(RetrievalSet):
    @property
    def files(self) -> List[Path]:
        return source_files(self.images)


def shard_paths(root: Path, split: str) -> List[Path]:
    """The shards `<split>/nshards.txt` announces, each present."""
    count_file = root / split / "nshards.txt"
    if not count_file.is_file():
        splits = sorted(p.name for p in root.iterdir() if (p / "nshards.txt").is_file())
        raise UtabenchError(f"{count_file} is missing; expected {LAYOUT}"
                            + (f" (splits here: {', '.join(splits)})" if splits else ""))
    text = count_file.read_text().strip()
    if not text.isdigit() or int(text) < 1:
        raise UtabenchError(f"{count_file} must hold the number of shards, a positive integer; it holds {text[:40]!r}")
    shards = [root / split / f"{i}.tar" for i in range(int(text))]
    missing = [shard.name for shard in shards if not shard.is_file()]
    if missing:
        raise UtabenchError(f"{root / split} lacks shards {', '.join(missing[:5])} of the {len(shards)} that "
                            "nshards.txt announces; download them again or fix nshards.txt")
    return shards


def _members(shard: Path) -> Dict[str, Dict[str, tarfile.TarInfo]]:
    """key -> {extension: member} of one shard, in the shard's order."""
    samples: Dict[str, Dict[str, tarfile.TarInfo]] = {}
    size = shard.stat().st_size
    try:
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.offset_data + member.size > size:
                    raise EOFError(f"{member.name} runs past the end of the file")
                parsed = base_plus_ext(member.name)
                if parsed[0] is None:
                    continue  # a file without an extension is no part of a sample (webdataset skips it too)
                key, ext = parsed
                samples.setdefault(key, {})[ext.lower()] = member
    except (tarfile.TarError, EOFError, OSError) as exc:
        why = (str(exc).splitlines() or [""])[0].rstrip(":")
        raise UtabenchError(f"shard {shard} is truncated or not a tar ({type(exc).__name__}: {why}); download it "
                            "again") from None
    return samples


def _read_member(shard: Path, member: tarfile.TarInfo) -> bytes:
    return TarMember(shard, member.name, member.offset_data, member.size).read()


def _image(shard: Path, key: str, parts: Dict[str, tarfile.TarInfo]) -> TarMember:
    ext = next((e for e in IMAGE_KEYS if e in parts), None)
    if ext is None:
        raise UtabenchError(f"shard {shard}: sample {key!r} has no image ({', '.join('.' + e for e in IMAGE_KEYS)}); "
                            f"it has {', '.join('.' + e for e in sorted(parts))}")
    member = parts[ext]
    return TarMember(shard, member.name, member.offset_data, member.size)


def _label(shard: Path, key: str, parts: Dict[str, tarfile.TarInfo], classes: int) -> int:
    if "cls" not in parts:
        raise UtabenchError(f"shard {shard}: sample {key!r} has no label (.cls); a classification set gives each "
                            "image one")
    text = _read_member(shard, parts["cls"]).decode("utf-8", "replace").strip()
    if not text.lstrip("-").isdigit():
        raise UtabenchError(f"shard {shard}: sample {key!r} has label {text[:20]!r}; a .cls holds an integer")
    label = int(text)
    if not 0 <= label < classes:
        raise UtabenchError(f"shard {shard}: sample {key!r} has label {label}, outside the {classes} classes of "
                            f"classnames.txt (0 .. {classes - 1})")
    return label


def read_classnames(path: Path) -> List[str]:
    """One class name per line; trailing blank lines are ignored, a blank line among the names is refused
    (CLIP_benchmark 1.6 would make it a class named '', 1.4 dropped it: the label numbering would differ)."""
    if not path.is_file():
        raise UtabenchError(f"{path} is missing; expected {LAYOUT} (or give `classnames`)")
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    blank = next((i for i, line in enumerate(lines, 1) if not line.strip()), None)
    if blank is not None:
        raise UtabenchError(f"{path}, line {blank} is blank: each line names one class (line i names label i - 1); "
                            "remove it, or name the class")
    if not lines:
        raise UtabenchError(f"{path} names no class; expected one class name per line")
    return [line.strip() for line in lines]


def _kind(root: Path) -> str:
    path = root / "dataset_type.txt"
    kind = path.read_text().strip() if path.is_file() else "classification"
    if kind not in KINDS:
        raise UtabenchError(f"{path} says {kind!r}; utabench reads {', '.join(KINDS)} sets")
    return kind


def _indexed(shards: List[Path]) -> List[Tuple[Path, str, Dict[str, tarfile.TarInfo]]]:
    return [(shard, key, parts) for shard in shards for key, parts in _members(shard).items()]


@DATASETS.register("wds", help=f"a CLIP_benchmark webdataset export: {LAYOUT}", schema=WdsEntry)
def wds(cfg):
    split = cfg.get("split") or "test"
    if is_url(cfg.get("root") or ""):  # mirrored to a local folder first, then read as one
        root = mirror(str(cfg["root"]), split, cfg.get("mirror"))
    else:
        root = dataset_root(cfg.get("root"), LAYOUT)
    kind = _kind(root)
    samples = _indexed(shard_paths(root, split))
    if not samples:
        raise UtabenchError(f"the shards of {root / split} hold no sample")
    described = json.dumps({"kind": kind, "split": split}).encode()
    name = cfg.get("name", "wds")
    if kind == "retrieval":
        images, captions = [], []
        for shard, key, parts in samples:
            if "txt" not in parts:
                raise UtabenchError(f"shard {shard}: sample {key!r} has no captions (.txt)")
            images.append(_image(shard, key, parts))
            captions.append(_read_member(shard, parts["txt"]).decode("utf-8").splitlines())  # as CLIP_benchmark
        return WdsRetrievalSet(name=name, type="wds", root=root, images=images, captions=captions,
                               extra=described + json.dumps(captions).encode())
    classnames = read_classnames(Path(cfg["classnames"]) if cfg.get("classnames") else root / "classnames.txt")
    own = root / "zeroshot_classification_templates.txt"
    templates = read_templates(cfg.get("templates") or (str(own) if own.is_file() else None))
    labels = json.dumps({"classnames": classnames, "templates": templates}).encode()
    if kind == "multilabel":
        multi_hot = _rows(samples, "labels")
        if multi_hot.shape[1] != len(classnames) or not np.isin(multi_hot, (0, 1)).all():
            raise UtabenchError(f"the .npy labels of {root / split} must be 0 / 1 over the {len(classnames)} classes "
                                f"of classnames.txt; they have {multi_hot.shape[1]} values")
        data = WdsClassificationSet(name=name, type="wds", root=root, samples=[
            (_image(shard, key, parts), i) for i, (shard, key, parts) in enumerate(samples)], classnames=classnames,
            templates=templates, extra=described + labels + multi_hot.tobytes())
        data.multi_hot = multi_hot
        return data
    labelled = [(_image(shard, key, parts), _label(shard, key, parts, len(classnames))) for shard, key, parts in
                samples]
    metadata = _rows(samples, "metadata") if any("npy" in parts for _, _, parts in samples) else None
    data = WdsClassificationSet(name=name, type="wds", root=root, samples=labelled, classnames=classnames,
                                templates=templates, extra=described + labels
                                + (metadata.tobytes() if metadata is not None else b""))
    data.metadata = metadata
    return data


def _rows(samples, what: str) -> np.ndarray:
    """Each sample's .npy as rows of one integer array: a classification set's metadata (DataComp's group fields:
    Dollar Street's income group, GeoDE's and FMoW's region, ...) or a multilabel set's labels. Every sample has one,
    of one length."""
    missing = next(((shard, key) for shard, key, parts in samples if "npy" not in parts), None)
    if missing:
        raise UtabenchError(f"shard {missing[0]}: sample {missing[1]!r} has no {what} (.npy)"
                            + (" where the others have" if what == "metadata" else ""))
    rows = []
    for shard, key, parts in samples:
        try:
            row = np.load(io.BytesIO(_read_member(shard, parts["npy"])), allow_pickle=False)
        except ValueError as exc:
            raise UtabenchError(f"shard {shard}: sample {key!r} has a .npy numpy cannot read ({exc})") from None
        rows.append(np.asarray(row).reshape(-1))
    if len({row.shape for row in rows}) != 1:
        raise UtabenchError(f"the .npy {what} of {samples[0][0].parent} differ in length between samples")
    return np.stack(rows).astype(np.int64)
