"""`--decode gpu`: loader workers only read file bytes; JPEGs are decoded in batches by nvjpeg on the GPU
(torchvision.io.decode_jpeg) and resized, cropped and normalised there, following the backbone's eval transform.

The pixels differ slightly from the PIL path (another IDCT, and torch's antialiased bicubic instead of PIL's), so
PIL stays the default; `bench/zeroshot_throughput.py` prints the top-1 of both on the same images. A file the batched
call cannot take (not a JPEG, CMYK, or where torchvision's image extension does not load) is decoded by PIL and
moved to the device; one PIL cannot read either is corrupt. The same code runs with device="cpu" (the tests).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from utabench.core.errors import UtabenchError
from utabench.datasets.images import CorruptImage, ImageList, read_bytes

JPEG_MAGIC = b"\xff\xd8"
_PASS_THROUGH = ("_convert_to_rgb", "MaybeConvertMode", "MaybeToTensor", "ToTensor")  # done by the decode (RGB, [0, 1])


@dataclass(frozen=True)
class TensorTransform:
    """An eval transform (resize the shorter side, centre crop, to [0, 1], normalise) as tensor operations."""

    resize: Tuple[int, ...]
    interpolation: InterpolationMode
    crop: Tuple[int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]

    @classmethod
    def of(cls, transform) -> "TensorTransform":
        """Read a torchvision Compose of Resize, CenterCrop, RGB conversion, ToTensor and Normalize (what open_clip
        and timm build for evaluation); anything else is refused, naming the step."""
        resize = interpolation = crop = norm = None
        for step in getattr(transform, "transforms", [transform]):
            name = getattr(step, "__name__", type(step).__name__)
            if isinstance(step, T.Resize) and step.max_size is None:
                resize, interpolation = tuple([step.size] if isinstance(step.size, int) else step.size), \
                    step.interpolation
            elif isinstance(step, T.CenterCrop):
                crop = tuple(step.size)
            elif isinstance(step, T.Normalize):
                norm = tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
            elif name not in _PASS_THROUGH or getattr(step, "mode", "RGB") != "RGB":
                raise UtabenchError(f"--decode gpu follows eval transforms made of Resize, CenterCrop, ToTensor and "
                                    f"Normalize; this backbone's has {name} ({step!r}); use --decode pil")
        if resize is None or crop is None or norm is None:
            raise UtabenchError(f"--decode gpu needs an eval transform with Resize, CenterCrop and Normalize; got "
                                f"{transform!r}; use --decode pil")
        return cls(resize, interpolation, crop if len(crop) == 2 else (crop[0], crop[0]), *norm)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, H, W) -> normalised float (3, crop_h, crop_w), on the image's device."""
        pixels = TF.resize(image.float(), list(self.resize), interpolation=self.interpolation, antialias=True)
        pixels = TF.center_crop(pixels.round_().clamp_(0, 255), list(self.crop)) / 255.0
        return TF.normalize(pixels, list(self.mean), list(self.std))


class EncodedImageList(Dataset):
    """An ImageList's files as raw bytes: (uint8 tensor, target, index). Decoding happens in `decode_batch`."""

    def __init__(self, images: ImageList):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        path, target = self.images.samples[index]
        data = read_bytes(path)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), target, index


def collate_encoded(batch):
    return [item[0] for item in batch], torch.as_tensor([item[1] for item in batch]), \
        torch.as_tensor([item[2] for item in batch])


def _decode_with_pil(data: torch.Tensor, device: str) -> torch.Tensor:
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        pixels = np.asarray(image.convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1).to(device)


def decode_batch(encoded: Sequence[torch.Tensor], indices: torch.Tensor, images: ImageList,
                 transform: TensorTransform, device: str) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Pixels of the batch (B, 3, h, w) on `device` and the kept positions; JPEGs are decoded in one nvjpeg call.
    A corrupt file raises CorruptImage, or is left out when the list skips corrupt images (None if none is left)."""
    jpeg = [i for i, data in enumerate(encoded) if bytes(data[:2].tolist()) == JPEG_MAGIC]
    decoded: List[Optional[torch.Tensor]] = [None] * len(encoded)
    try:
        for i, image in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
                            if jpeg else []):
            decoded[i] = image
    except RuntimeError:
        pass  # one file it cannot take fails the batched call; each is decoded alone below
    kept = []
    for i, data in enumerate(encoded):
        if decoded[i] is None and i in jpeg and len(jpeg) > 1:
            try:
                decoded[i] = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                pass
        if decoded[i] is None:
            try:
                decoded[i] = _decode_with_pil(data, device)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                path = images.samples[int(indices[i])][0]
                if images.skip_corrupt:
                    continue
                raise CorruptImage(f"corrupt or unreadable image {path} ({type(exc).__name__}: {exc}); "
                                   "fix or remove it, or pass --skip-corrupt") from None
        kept.append(i)
    if not kept:
        return None
    return torch.stack([transform(decoded[i]) for i in kept]), torch.as_tensor(kept)
