"""WinoGAViL (Hugging Face `nlphuji/winogavil`), the cue-association games DataComp scores, read with the `datasets`
library as a DataComp user has them on disk. ROOT is any of:

    DATA                                   DataComp's data root: DATA/hf_cache is the `cache_dir` its
                                           `load_dataset("nlphuji/winogavil", split="test", cache_dir=...)` filled
                                           (DATA/hf_cache/nlphuji___winogavil/<config>/<version>/<hash>/*.arrow)
    DATA/hf_cache                          that cache directory
    DATA/hf_cache/nlphuji___winogavil      the set's folder in it
    a local copy of the hub repository     its data files (parquet, ...), what `load_dataset(ROOT)` reads; the arrow
                                           files it makes go to $UTABENCH_CACHE/hf_datasets, else
                                           ~/.cache/utabench/hf_datasets

The Hub is never asked: the cache is read as `datasets` reads it offline (HF_HUB_OFFLINE). A game (row) has `cue`
(text), `candidates` (names), `associations` (the candidates the cue is associated with) and `candidate_images`
(one image per candidate, in order). Refused in one line: a missing column, a game whose images and candidates differ
in number, an association that is not a candidate, a game without associations, an empty cue.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import Field
from torch.utils.data import Dataset

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS
from utabench.core.schema import Schema
from utabench.datasets.images import CorruptImage, dataset_root

HUB_ID = "nlphuji/winogavil"
CACHED = "nlphuji___winogavil"  # the folder `datasets` caches the hub set in, under its cache_dir
COLUMNS = ("cue", "candidates", "associations", "candidate_images")
LAYOUT = (f"DataComp's data root with hf_cache/{CACHED}/ (what load_dataset({HUB_ID!r}, cache_dir=DATA/hf_cache) "
          f"left), that hf_cache or its {CACHED} folder, or a local copy of the hub repository's data files")


class WinogavilEntry(Schema):
    split: str = Field("test", description="the split evaluated (DataComp: test)")


@dataclass
class WinogavilSet:
    name: str
    type: str
    root: Path
    games: Any  # the split as a `datasets.Dataset`, candidate_images undecoded ({bytes, path} per image)
    cues: List[str]
    candidates: List[List[str]]
    associations: List[List[str]]
    files: List[Path] = field(default_factory=list)  # what the fingerprint hashes: the split's data files
    extra: bytes = b""
    fingerprint: str = ""  # filled by the runner (core/fingerprint.py)

    def truth(self, game: int) -> np.ndarray:
        """DataComp's y_true: which candidates are associations (`np.isin(candidates, associations)`)."""
        return np.isin(self.candidates[game], self.associations[game])


def clip_prompt(cue: str) -> str:
    """DataComp's prompt of a cue (eval_utils/wino_eval.py `get_clip_prompt`): lower-cased, after "An " when it
    starts with a, e, i, o or u, else after "A "."""
    cue = cue.lower()
    return f"An {cue}" if cue[0] in "aeiou" else f"A {cue}"


@contextlib.contextmanager
def _offline_and_quiet():
    """`datasets` offline (the Hub is never asked) and without its progress bars and cache notices, restored after."""
    try:
        import datasets
    except ImportError:
        raise UtabenchError("the winogavil dataset type reads the set with Hugging Face `datasets`, which is not "
                            "installed; pip install 'utabench[winogavil]' (datasets>=4,<6)") from None
    from datasets import utils as hf_utils
    from datasets.utils import logging as hf_logging

    offline, verbosity = datasets.config.HF_HUB_OFFLINE, hf_logging.get_verbosity()
    bars = hf_utils.are_progress_bars_disabled()
    datasets.config.HF_HUB_OFFLINE = True
    hf_logging.set_verbosity_error()
    hf_utils.disable_progress_bars()
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
        hf_logging.set_verbosity(verbosity)
        if not bars:
            hf_utils.enable_progress_bars()


def _cache_dir(root: Path) -> Optional[Path]:
    """The `cache_dir` DataComp gave load_dataset, where ROOT is one of the cache layouts (None: a local copy)."""
    if root.name == CACHED:
        return root.parent
    return next((cache for cache in (root / "hf_cache", root) if (cache / CACHED).is_dir()), None)


def _load(root: Path, split: str):
    cache = _cache_dir(root)
    with _offline_and_quiet() as datasets:
        try:
            if cache is not None:
                games = datasets.load_dataset(HUB_ID, split=split, cache_dir=str(cache))
                files = [Path(f["filename"]) for f in games.cache_files]
            else:
                local = Path(os.environ.get("UTABENCH_CACHE") or Path.home() / ".cache" / "utabench") / "hf_datasets"
                games = datasets.load_dataset(str(root), split=split, cache_dir=str(local))
                files = sorted(p for p in root.rglob("*") if p.is_file()
                               and not any(part.startswith(".") for part in p.relative_to(root).parts))
        except (FileNotFoundError, ValueError, ConnectionError, RuntimeError, KeyError) as exc:
            where = f"{cache / CACHED}" if cache is not None else f"{root} (read as a local copy of the hub repository)"
            why = " ".join(str(exc).split()) or type(exc).__name__
            raise UtabenchError(f"WinoGAViL at {where}, split {split!r}, cannot be read by `datasets` ({why}); "
                                f"expected {LAYOUT}") from None
        missing = [c for c in COLUMNS if c not in games.column_names]
        if missing:
            raise UtabenchError(f"WinoGAViL at {root} has no column {', '.join(missing)} (it has "
                                f"{', '.join(games.column_names)}); expected games with {', '.join(COLUMNS)}, as "
                                f"{HUB_ID} has")
        images = games.features["candidate_images"]
        inner = getattr(images, "feature", None)
        if not isinstance(inner, datasets.Image):
            raise UtabenchError(f"WinoGAViL at {root}: candidate_images is {images}, not a list of images; expected "
                                f"one image per candidate, as {HUB_ID} has")
        games = games.cast_column("candidate_images", datasets.Sequence(datasets.Image(decode=False)))
    return games, files


def _checked(games, root: Path) -> Dict[str, list]:
    """The games' text columns, every game checked."""
    import pyarrow.compute as pc

    text = games.select_columns(["cue", "candidates", "associations"]).to_dict()
    counts = [n or 0 for n in pc.list_value_length(games.data.column("candidate_images")).to_pylist()]
    for game, (cue, candidates, associations, n) in enumerate(zip(text["cue"], text["candidates"],
                                                                   text["associations"], counts)):
        where = f"WinoGAViL at {root}, game {game}"
        if not cue or not str(cue).strip():
            raise UtabenchError(f"{where} has an empty cue; every game needs its cue (text)")
        if not candidates or n != len(candidates):
            raise UtabenchError(f"{where} has {n} candidate_images for {len(candidates or [])} candidates; expected "
                                "one image per candidate, in the candidates' order")
        if not associations:
            raise UtabenchError(f"{where} has no associations; expected the candidates the cue is associated with")
        strays = [a for a in associations if a not in candidates]
        if strays:
            raise UtabenchError(f"{where}: associations {strays} are not among its candidates {candidates}; each "
                                "association must name one of the game's candidates")
    return text


@DATASETS.register("winogavil", help="WinoGAViL (DataComp's misc/winogavil): DataComp's hf_cache, or a local copy "
                   "of the hub repository", schema=WinogavilEntry)
def winogavil(cfg) -> WinogavilSet:
    root = dataset_root(cfg.get("root"), LAYOUT)
    split = cfg.get("split", "test")
    games, files = _load(root, split)
    text = _checked(games, root)
    return WinogavilSet(name=cfg.get("name", "winogavil"), type="winogavil", root=root, games=games,
                        cues=[str(c) for c in text["cue"]], candidates=text["candidates"],
                        associations=text["associations"], files=files, extra=split.encode())


class CandidateImages(Dataset):
    """Every game's candidate images in order, flattened: (image tensor, game, index); a corrupt image raises, or
    yields None with `skip_corrupt`. A worker keeps the last game's row, since a batch reads a game's images in turn."""

    def __init__(self, data: WinogavilSet, transform, skip_corrupt: bool = False):
        self.data, self.transform, self.skip_corrupt = data, transform, skip_corrupt
        self.starts = np.cumsum([0] + [len(c) for c in data.candidates])
        self._row = (-1, [])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def game_of(self, index: int) -> int:
        return int(np.searchsorted(self.starts, index, side="right") - 1)

    def __getitem__(self, index: int):
        game = self.game_of(index)
        if self._row[0] != game:
            self._row = (game, self.data.games[game]["candidate_images"])
        stored = self._row[1][index - self.starts[game]]
        try:
            source = io.BytesIO(stored["bytes"]) if stored.get("bytes") else stored["path"]
            with Image.open(source) as image:
                image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError) as exc:
            if self.skip_corrupt:
                return None
            raise CorruptImage(f"corrupt or unreadable image {index - self.starts[game]} of WinoGAViL game {game} "
                               f"({type(exc).__name__}: {exc}); fix it, or pass --skip-corrupt to skip its game (its "
                               "images are counted in the result record)") from None
        return self.transform(image), game, index
