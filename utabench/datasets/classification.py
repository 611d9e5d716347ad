"""Classification datasets in their standard on-disk layouts: ImageNet-1K val, -A, -R, -V2 (matched-frequency
folders 0..999), -Sketch, ObjectNet (113 classes through its mapping files) and any plain ImageFolder.

A reader returns a `ClassificationSet`: samples with labels, the class names of its label space, the templates.
ImageNet-1K, -V2 and -Sketch are scored over the full class index (1000 classes); -A and -R over their 200-class
wnid subsets, ObjectNet over its 113 classes, as in clip_benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from pydantic import Field

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.images import dataset_root, list_images
from utabench.datasets.vocab import imagenet_class_index, imagenet_subset_wnids, read_classnames, read_templates

TEMPLATES = Field(None, description="prompt templates with {c}: a JSON list or one per line (default: OpenAI's 80)")


class ImageNetEntry(Schema):
    classes: Optional[str] = Field(None, description="class index JSON [[wnid, name], ...] (default: ImageNet's 1000)")
    templates: Optional[str] = TEMPLATES


class ObjectNetEntry(Schema):
    templates: Optional[str] = TEMPLATES


class ImageFolderEntry(Schema):
    classnames: Optional[str] = Field(None, description="class names JSON (default: the folder names)")
    templates: Optional[str] = TEMPLATES


@dataclass
class ClassificationSet:
    name: str
    type: str
    root: Path
    samples: List[Tuple[Path, int]]
    classnames: List[str]
    templates: List[str]
    class_ids: List[str] = field(default_factory=list)  # what names each label on disk: wnids, or folder names
    extra: bytes = b""  # what else the results depend on (mapping files), for the fingerprint
    fingerprint: str = ""  # filled by the runner from `files` and `extra` (core/fingerprint.py)
    kind = "classification"  # what a task reads from it (a `wds` set is one or the other)

    @property
    def files(self) -> List[Path]:
        return [path for path, _ in self.samples]


def _first_existing(root: Path, candidates) -> Path:
    for sub in candidates:
        if (root / sub).is_dir():
            return root / sub
    return root


def _class_folders(root: Path, layout: str) -> List[str]:
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not folders:
        raise UtabenchError(f"{root} has no class folders; expected {layout}")
    return folders


def _samples(root: Path, folders: List[str], labels: List[int], layout: str) -> List[Tuple[Path, int]]:
    """(image, label) of every class folder; a folder without images is refused (it would count as a class that
    can never be right or wrong, and usually means an incomplete copy)."""
    samples = []
    for folder, label in zip(folders, labels):
        images = list_images(root / folder)
        if not images:
            raise UtabenchError(f"class folder {root / folder} has no images; expected {layout} (copy the "
                                "missing images, or remove the folder and pass a class list without it)")
        samples += [(path, label) for path in images]
    return samples


def _build(cfg, type_, root, samples, classnames, class_ids, extra: bytes = b"") -> ClassificationSet:
    templates = read_templates(cfg.get("templates"))
    labels = json.dumps({"classnames": classnames, "templates": templates}).encode()
    return ClassificationSet(name=cfg.get("name", type_), type=type_, root=root, samples=samples,
                             classnames=classnames, templates=templates, class_ids=list(class_ids),
                             extra=extra + labels)


def _wnid_dataset(cfg, type_: str, layout: str, subdirs=(), subset: Optional[str] = None) -> ClassificationSet:
    """ImageNet-style wnid folders. `subset` ('a'/'r'): the label space is the dataset's 200 wnids."""
    root = _first_existing(dataset_root(cfg.get("root"), layout), subdirs)
    wnids, names = imagenet_class_index(cfg.get("classes"))
    index = {w: i for i, w in enumerate(wnids)}
    folders = _class_folders(root, layout)
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise UtabenchError(
            f"{root}: folders {', '.join(unknown[:5])} are not wnids of the class index; expected {layout}"
        )
    if subset is None:
        return _build(cfg, type_, root, _samples(root, folders, [index[f] for f in folders], layout),
                      names, wnids)
    if cfg.get("classes") is None and folders != sorted(imagenet_subset_wnids(subset)):
        raise UtabenchError(
            f"{root} has {len(folders)} class folders; ImageNet-{subset.upper()} has the 200 wnid folders "
            f"listed in timm's imagenet_{subset}_synsets.txt"
        )
    subset_names = [names[index[f]] for f in folders]
    return _build(cfg, type_, root, _samples(root, folders, list(range(len(folders))), layout), subset_names,
                  folders)


@DATASETS.register("imagenet", help="ImageNet-1K val: ROOT/val/<wnid>/*.JPEG (or ROOT/<wnid>/...)",
                   schema=ImageNetEntry)
def imagenet(cfg):
    return _wnid_dataset(cfg, "imagenet", "ROOT/val/<wnid>/*.JPEG with the 1000 wnid folders", subdirs=("val",))


@DATASETS.register("imagenet-sketch", help="ImageNet-Sketch: ROOT/sketch/<wnid>/*.JPEG (or ROOT/<wnid>/...)",
                   schema=ImageNetEntry)
def imagenet_sketch(cfg):
    return _wnid_dataset(cfg, "imagenet-sketch", "ROOT/sketch/<wnid>/*.JPEG with 1000 wnid folders",
                         subdirs=("sketch",))


@DATASETS.register("imagenet-a", help="ImageNet-A: ROOT/<wnid>/*.jpg, the 200 wnid folders", schema=ImageNetEntry)
def imagenet_a(cfg):
    return _wnid_dataset(cfg, "imagenet-a", "ROOT/<wnid>/*.jpg with the 200 ImageNet-A wnid folders",
                         subdirs=("imagenet-a",), subset="a")


@DATASETS.register("imagenet-r", help="ImageNet-R: ROOT/<wnid>/*.jpg, the 200 wnid folders", schema=ImageNetEntry)
def imagenet_r(cfg):
    return _wnid_dataset(cfg, "imagenet-r", "ROOT/<wnid>/*.jpg with the 200 ImageNet-R wnid folders",
                         subdirs=("imagenet-r",), subset="r")


@DATASETS.register("imagenet-v2", help="ImageNet-V2 matched-frequency: ROOT/<0..999>/*.jpeg", schema=ImageNetEntry)
def imagenet_v2(cfg):
    layout = "ROOT/<class index 0..999>/*.jpeg (imagenetv2-matched-frequency-format-val)"
    root = _first_existing(dataset_root(cfg.get("root"), layout), ("imagenetv2-matched-frequency-format-val",))
    wnids, names = imagenet_class_index(cfg.get("classes"))
    folders = _class_folders(root, layout)
    if not all(f.isdigit() and int(f) < len(names) for f in folders):
        bad = [f for f in folders if not (f.isdigit() and int(f) < len(names))]
        raise UtabenchError(f"{root}: folders {', '.join(bad[:5])} are not class indices; expected {layout}")
    return _build(cfg, "imagenet-v2", root, _samples(root, folders, [int(f) for f in folders], layout), names,
                  wnids)


@DATASETS.register("objectnet", help="ObjectNet 1.0: ROOT/objectnet-1.0/{images,mappings}; 113 ImageNet classes",
                   schema=ObjectNetEntry)
def objectnet(cfg):
    layout = ("ROOT/objectnet-1.0/images/<folder>/*.png and ROOT/objectnet-1.0/mappings/"
              "{folder_to_objectnet_label.json, objectnet_to_imagenet_1k.json}")
    root = _first_existing(dataset_root(cfg.get("root"), layout), ("objectnet-1.0",))
    mappings, images = root / "mappings", root / "images"
    files = [mappings / "folder_to_objectnet_label.json", mappings / "objectnet_to_imagenet_1k.json"]
    if not images.is_dir() or not all(f.is_file() for f in files):
        raise UtabenchError(f"{root} is not an ObjectNet directory; expected {layout}")
    try:
        folder_to_label = json.loads(files[0].read_text())
        label_to_imagenet = json.loads(files[1].read_text())
    except json.JSONDecodeError as exc:
        raise UtabenchError(f"{root}: unreadable ObjectNet mapping file ({exc}); expected {layout}") from None
    label_to_folder = {label: folder for folder, label in folder_to_label.items()}
    missing = [label for label in label_to_imagenet if label not in label_to_folder]
    if missing:
        raise UtabenchError(f"{files[0]} has no folder for ObjectNet labels {', '.join(missing[:5])}")
    # clip_benchmark's definition: the classes that map to ImageNet, in sorted folder order, lower-cased labels
    folders = sorted(label_to_folder[label] for label in label_to_imagenet)
    absent = [f for f in folders if not (images / f).is_dir()]
    if absent:
        raise UtabenchError(f"{images} lacks class folders {', '.join(absent[:5])}; expected {layout}")
    classnames = [folder_to_label[f].lower() for f in folders]
    extra = files[0].read_bytes() + files[1].read_bytes()
    return _build(cfg, "objectnet", images, _samples(images, folders, list(range(len(folders))), layout),
                  classnames, folders, extra)


@DATASETS.register("imagefolder", help="any ROOT/<class>/*.jpg; class names from folders or a JSON `classnames` file",
                   schema=ImageFolderEntry)
def imagefolder(cfg):
    layout = "ROOT/<class name>/<images>"
    root = dataset_root(cfg.get("root"), layout)
    folders = _class_folders(root, layout)
    if cfg.get("classnames"):
        names = read_classnames(cfg["classnames"], folders)
    else:
        names = [f.replace("_", " ") for f in folders]
    return _build(cfg, "imagefolder", root, _samples(root, folders, list(range(len(folders))), layout), names,
                  folders)
