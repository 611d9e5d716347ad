"""What content fingerprints cost on an ImageNet-val-sized folder, beside the reference tool (coreutils sha256sum).

    python bench/fingerprint_cost.py [--root DIR] [--files 50000] [--mean-kb 128]

Without --root it writes a folder of random files shaped like ImageNet val (1000 class folders, 50,000 files,
~6.4 GB at 128 KB each) into a temporary directory first. Prints, in one run: utabench's first fingerprint (every
file read and hashed), the second (hashes cached by path, size and mtime: only stat), and `sha256sum` over the same
files; and the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from utabench.core.fingerprint import fingerprint


def make_folder(root: Path, files: int, mean_kb: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    sizes = np.clip(rng.normal(mean_kb * 1024, mean_kb * 256, files), 4096, None).astype(int)
    block = rng.integers(0, 256, int(sizes.max()) + 1024, dtype=np.uint8).tobytes()
    for i, size in enumerate(sizes):
        folder = root / f"n{i % 1000:08d}"
        folder.mkdir(exist_ok=True)
        offset = int(rng.integers(0, 1024))
        (folder / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(block[offset:offset + int(size)])


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root")
    parser.add_argument("--files", type=int, default=50000)
    parser.add_argument("--mean-kb", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp) / "val"
        if not args.root:
            root.mkdir()
            start = time.perf_counter()
            make_folder(root, args.files, args.mean_kb)
            print(f"wrote {args.files} files in {time.perf_counter() - start:.1f} s")
        files = sorted(root.rglob("*.JPEG"))
        total = sum(f.stat().st_size for f in files) / 1e9
        cache = Path(tmp) / "cache"
        cold = drop_page_cache()
        start = time.perf_counter()
        fingerprint(root, files, b"", cache)
        first = time.perf_counter() - start
        start = time.perf_counter()
        fingerprint(root, files, b"", cache)
        second = time.perf_counter() - start
        drop_page_cache()
        start = time.perf_counter()
        subprocess.run(["xargs", "-0", "sha256sum"], input=b"\0".join(str(f).encode() for f in files),
                       stdout=subprocess.DEVNULL, check=True)
        reference = time.perf_counter() - start
    print(f"{len(files)} files, {total:.2f} GB, page cache {'dropped' if cold else 'warm (could not drop)'}")
    print(f"utabench fingerprint, first run (read + hash): {first:7.2f} s  ({total / first:.2f} GB/s)")
    print(f"utabench fingerprint, cached (stat only):       {second:7.2f} s")
    print(f"sha256sum over the same files (reference):      {reference:7.2f} s  ({total / reference:.2f} GB/s)")
    print(f"ratios: first / sha256sum = {first / reference:.2f}, cached / first = {second / first:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
