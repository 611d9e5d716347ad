"""Pretraining inputs: an ImageFolder tree or webdataset tar shards, read in a deterministic, resumable order.

Sources: `imagefolder` (every image under `root`, in sorted path order; class folders are not needed) and
`webdataset` (tar shards named by a glob or `{000..099}` brace range; a sample is the members sharing a key, with
one image (`jpg`/`jpeg`/`png`/`webp`) and, for image-text training, a `txt` caption: several lines are several
captions of the image, one drawn per epoch). Shards are indexed once (member offsets) and read by seeking, so any
sample can be fetched at any time.

Order and augmentation are functions of (seed, epoch, index) only: the shared trainer's sampler
(`training/sampler.py`) gives the batch at step s as (index, epoch) pairs, and each sample draws its crop, flip,
caption and mask from its own generator. Resuming at step s therefore reproduces the data exactly, with any number
of loader workers.
"""

from __future__ import annotations

import glob
import io
import math
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from utabench.core.errors import UtabenchError
from utabench.core.registry import Registry
from utabench.datasets.images import IMAGE_SUFFIXES

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_shards(pattern: str) -> List[str]:
    """`dir/{000..012}.tar` (one brace range, zero padding kept) or a glob, sorted."""
    match = _BRACES.search(pattern)
    if match:
        first, last = match.group(1), match.group(2)
        names = [pattern[:match.start()] + str(i).zfill(len(first)) + pattern[match.end():]
                 for i in range(int(first), int(last) + 1)]
        missing = [n for n in names if not Path(n).is_file()]
        if missing:
            raise UtabenchError(f"webdataset shard {missing[0]} (of {pattern}) does not exist")
        return names
    return sorted(glob.glob(pattern))


@dataclass
class Record:
    source: str  # file path (imagefolder) or shard path (webdataset)
    offset: int = 0  # byte offset of the image inside the shard
    size: int = 0
    caption: Optional[str] = None


def index_imagefolder(root: str) -> List[Record]:
    base = Path(root)
    if not base.is_dir():
        raise UtabenchError(f"image directory {root} does not exist; expected an ImageFolder tree root/<class>/<image>")
    files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UtabenchError(f"image directory {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); expected an "
                            "ImageFolder tree root/<class>/<image>")
    return [Record(str(p)) for p in files]


def index_webdataset(pattern: str, need_captions: bool = False) -> List[Record]:
    shards = expand_shards(pattern)
    if not shards:
        raise UtabenchError(f"no webdataset shards match {pattern!r}; give a glob or a brace range such as "
                            "data/{00000..00099}.tar")
    records: List[Record] = []
    for shard in shards:
        samples: Dict[str, Dict[str, tarfile.TarInfo]] = {}
        try:
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    name = member.name.rsplit("/", 1)[-1]
                    key, _, ext = name.partition(".")
                    folder = member.name[: -len(name)]
                    samples.setdefault(folder + key, {})[ext.lower()] = member
                captions = {k: tar.extractfile(m["txt"]).read().decode("utf-8") for k, m in samples.items()
                            if need_captions and "txt" in m}
        except tarfile.TarError as exc:
            raise UtabenchError(f"webdataset shard {shard} is not a readable (uncompressed) tar: {exc}") from None
        for key in sorted(samples):
            members = samples[key]
            image = next((members[e] for e in ("jpg", "jpeg", "png", "webp") if e in members), None)
            if image is None or (need_captions and key not in captions):
                continue
            records.append(Record(shard, image.offset_data, image.size, captions.get(key)))
    if not records:
        what = "an image and a `txt` caption" if need_captions else "an image (jpg/png/webp)"
        raise UtabenchError(f"webdataset shards {pattern!r} hold no samples with {what}")
    return records


SOURCES: Registry = Registry("pretraining data type", "pretraining data types")


@SOURCES.register("imagefolder", help="every image under `root`, in sorted path order")
def _imagefolder_source(data: Dict, need_captions: bool) -> List[Record]:
    if need_captions:
        raise UtabenchError("image-text training needs captions: use a webdataset source (jpg + txt)")
    return index_imagefolder(str(data.get("root", "")))


@SOURCES.register("webdataset", help="tar shards of `shards` (a glob or a {000..099} range)")
def _webdataset_source(data: Dict, need_captions: bool) -> List[Record]:
    return index_webdataset(str(data.get("shards", "")), need_captions)


def index_source(data: Dict, need_captions: bool = False) -> List[Record]:
    return SOURCES.get(data.get("type", "imagefolder"))(data, need_captions)


HOLDOUT_STREAM = 7_919  # the held-out draw's stream beside the seed (the data order's is 1_000_003)


def split_holdout(records: List[Record], count: int, seed: int) -> Tuple[List[Record], List[Record]]:
    """(training, held out): `count` records drawn without replacement from (seed, HOLDOUT_STREAM), both lists in
    the source's order; the held-out ones are never trained on."""
    if not 0 < count < len(records):
        raise UtabenchError(f"validation holdout of {count} images leaves nothing to train on: the data has "
                            f"{len(records)}; lower validation.holdout")
    held = set(np.random.default_rng([int(seed), HOLDOUT_STREAM]).choice(len(records), count, replace=False).tolist())
    return ([r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held])


def read_image(record: Record) -> Image.Image:
    try:
        if record.size:
            with open(record.source, "rb") as f:
                f.seek(record.offset)
                data = io.BytesIO(f.read(record.size))
            return Image.open(data).convert("RGB")
        with Image.open(record.source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        where = f"{record.source}@{record.offset}" if record.size else record.source
        raise UtabenchError(f"cannot decode image {where}: {exc}") from None


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int, scale: Tuple[float, float],
                            ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """(left, top, w, h) as in Inception-style RandomResizedCrop (10 tries, then a centre crop), drawn from rng."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


KEEP_DECODED_BYTES = 256 << 20  # a source whose decoded images fit in this is kept in memory after the first read


class PretrainImages(Dataset):
    """Items are (index, epoch) pairs; returns {"image": float (3, S, S) in [0, 1], "index", "epoch", and "mask" and/or
    "caption" when a mask generator / captions are used}. A small source (all images decoded within
    `KEEP_DECODED_BYTES`, judged from the first image: the embedded world's) is decoded once and kept in memory, as
    each loader process reads it; a large one is decoded at every read."""

    def __init__(self, records: List[Record], image_size: int, seed: int, scale: Tuple[float, float] = (0.4, 1.0),
                 hflip: bool = True, mask_fn: Optional[Callable[[np.random.Generator], np.ndarray]] = None,
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        self.records, self.image_size, self.seed = records, int(image_size), int(seed)
        self.scale, self.ratio, self.hflip, self.mask_fn = tuple(scale), tuple(ratio), hflip, mask_fn
        self._keep: Optional[bool] = None
        self._decoded: Dict[int, Image.Image] = {}

    @classmethod
    def from_config(cls, data: Dict, image_size: int, seed: int, need_captions: bool = False,
                    mask_fn: Optional[Callable[[np.random.Generator], np.ndarray]] = None,
                    records: Optional[List[Record]] = None) -> "PretrainImages":
        """From a config's `data` section: source (or `records` of it), crop `scale` and aspect `ratio` ranges,
        `hflip`."""
        records = index_source(data, need_captions) if records is None else records
        return cls(records, image_size, seed, tuple(data.get("scale", (0.4, 1.0))),
                   bool(data.get("hflip", True)), mask_fn, tuple(data.get("ratio", (3 / 4, 4 / 3))))

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, index: int) -> Image.Image:
        image = self._decoded.get(index)
        if image is None:
            image = read_image(self.records[index])
            if self._keep is None:
                self._keep = len(self.records) * image.width * image.height * 3 <= KEEP_DECODED_BYTES
            if self._keep:
                self._decoded[index] = image
        return image

    def __getitem__(self, item: Tuple[int, int]) -> Dict:
        index, epoch = item
        rng = np.random.default_rng([self.seed, epoch, index])
        record = self.records[index]
        image = self._image(index)
        left, top, w, h = random_resized_crop_box(rng, image.width, image.height, self.scale, self.ratio)
        image = image.resize((self.image_size, self.image_size), Image.BICUBIC, box=(left, top, left + w, top + h))
        if self.hflip and rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        out = {"image": torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255), "index": index,
               "epoch": epoch}
        if record.caption is not None:
            lines = [line for line in record.caption.splitlines() if line.strip()] or [""]
            out["caption"] = lines[int(rng.integers(len(lines)))]
        if self.mask_fn is not None:
            out["mask"] = torch.from_numpy(self.mask_fn(rng))
        return out


class FixedViews(Dataset):
    """Validation items: item i is `images`' view of image i at epoch 0, the training augmentation (and mask) drawn
    once from (seed, 0, i), so every validation pass scores the same inputs."""

    def __init__(self, images: PretrainImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Dict:
        return self.images[(int(index), 0)]
