"""Image lists for evaluation: PIL decoding with a clear error for a corrupt file, or a counted skip when asked."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from utabench.core.errors import UtabenchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def list_images(folder: Path) -> List[Path]:
    """The image files of a folder, broken symlinks included: they are unreadable images, refused or skipped and
    counted like a corrupt one, never dropped unseen."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists())))


class CorruptImage(UtabenchError):
    pass


@dataclass(frozen=True)
class TarMember:
    """An image inside a tar shard (a webdataset shard is a plain tar), read by its offset: random access, so shards
    take the loaders, samplers and caches that image files take."""

    shard: Path
    name: str  # the member's name in the tar
    offset: int  # of its data
    size: int

    def read(self) -> bytes:
        with open(self.shard, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard} ends inside {self.name}")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


def read_bytes(path) -> bytes:
    """An image's encoded bytes, from a file or a tar member."""
    return path.read() if isinstance(path, TarMember) else Path(path).read_bytes()


def source_files(paths) -> List[Path]:
    """The files that hold these images, in first-seen order: the images themselves, or their shards."""
    return list(dict.fromkeys(p.shard if isinstance(p, TarMember) else Path(p) for p in paths))


class ImageList(Dataset):
    """(path, target) pairs -> (image tensor, target, index); a corrupt image raises, or yields None if skipping."""

    def __init__(self, samples: Sequence[Tuple[Path, int]], transform: Optional[Callable] = None,
                 skip_corrupt: bool = False):
        self.samples = list(samples)
        self.transform = transform
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            with Image.open(io.BytesIO(path.read()) if isinstance(path, TarMember) else path) as image:
                image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if self.skip_corrupt:
                return None
            raise CorruptImage(
                f"corrupt or unreadable image {path} ({type(exc).__name__}: {exc}); fix or remove it, or pass "
                "--skip-corrupt to skip such images (they are counted in the result record)"
            ) from None
        if self.transform is not None:
            image = self.transform(image)
        return image, target, index


def collate_skipping(batch):
    """Default collation of (image, target, index), leaving out the items a skipped corrupt image turned into None."""
    kept = [item for item in batch if item is not None]
    if not kept:
        return None
    images = torch.stack([item[0] for item in kept])
    targets = torch.as_tensor([item[1] for item in kept])
    indices = torch.as_tensor([item[2] for item in kept])
    return images, targets, indices


def dataset_root(root, layout: str, what: str = "dataset root") -> Path:
    """The directory a dataset entry's `root` names; a missing one is an error that says which layout is expected."""
    if not root:
        raise UtabenchError(f"a dataset entry needs a `root` directory ({layout})")
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise UtabenchError(f"{what} {path} does not exist; expected {layout}")
    return path
