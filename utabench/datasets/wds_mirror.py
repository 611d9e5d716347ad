"""A CLIP_benchmark webdataset set behind a URL (`root: https://...`), mirrored to a local folder of the same layout
before it is read: the metadata files (classnames.txt, zeroshot_classification_templates.txt, dataset_type.txt) and
the split's nshards.txt and shards, each downloaded once and written atomically, so an interrupted download leaves
no partial file and a rerun fetches only what is missing.

A Hugging Face dataset URL `https://huggingface.co/datasets/<user>/<repo>/tree/<branch>` is read as CLIP_benchmark
reads it: the metadata from `.../raw/<branch>`, the shards from `.../resolve/<branch>`. The mirror is
`<mirror root>/<16 hex digits of the URL's sha256>`; the root is the entry's `mirror`, else `$UTABENCH_CACHE/wds`,
else `~/.cache/utabench/wds`. A changed remote set is read again only once its mirror folder is removed (the records'
fingerprint is over the mirrored shards' contents, so a record always names what it read).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write

METADATA = ("classnames.txt", "zeroshot_classification_templates.txt", "dataset_type.txt")
TIMEOUT_S = 60


def is_url(root: str) -> bool:
    return str(root).startswith(("http://", "https://"))


def _bases(url: str) -> Tuple[str, str]:
    """(metadata base, shard base) of a set's URL."""
    url = url.rstrip("/")
    if url.startswith("https://huggingface.co/datasets/") and "/tree/" in url:
        head, branch = url.split("/tree/", 1)
        return f"{head}/raw/{branch}", f"{head}/resolve/{branch}"
    return url, url


def _fetch(url: str, dest: Path, required: bool = True) -> Optional[Path]:
    """`url` into `dest` (atomically) unless it is there; None for a missing optional file."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            def copy(tmp):
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out)
            atomic_write(dest, copy)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and not required:
            return None
        raise UtabenchError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UtabenchError(f"cannot download {url} ({getattr(exc, 'reason', exc)}); check the URL and the network, "
                            "or download the set and give its folder as root") from None
    return dest


def mirror(url: str, split: str, root: Optional[str] = None) -> Path:
    """The local folder holding the set at `url` (its metadata and `split`'s shards)."""
    base = Path(root).expanduser() if root else Path(os.environ.get("UTABENCH_CACHE") or
                                                     Path.home() / ".cache" / "utabench") / "wds"
    local = base / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    meta, shards = _bases(url)
    for name in METADATA:
        _fetch(f"{meta}/{name}", local / name, required=False)
    count = _fetch(f"{meta}/{split}/nshards.txt", local / split / "nshards.txt")
    text = count.read_text().strip()
    if not text.isdigit():
        raise UtabenchError(f"{url}/{split}/nshards.txt must hold the number of shards; it holds {text[:40]!r}")
    for i in range(int(text)):
        _fetch(f"{shards}/{split}/{i}.tar", local / split / f"{i}.tar")
    return local
