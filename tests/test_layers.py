"""utabench's packages import downward only: core -> backbones / datasets / world -> training -> tasks / pretrain /
dense / llava / finetune -> harness. Every import is read from the source (those inside functions too); an upward one
fails here, and so does a cycle between two packages of one layer."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "utabench"
LAYERS = {"core": 0, "torchvision_shim": 0, "backbones": 1, "datasets": 1, "world": 1, "training": 1.5, "tasks": 2,
          "pretrain": 2, "dense": 2, "llava": 2, "finetune": 2, "harness": 3}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("utabench.") and _package(name):
                yield node.lineno, _package(name)


def _edges():
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("configs", "results") or len(relative.parts) == 1:
            continue  # mmengine recipes and data; the package's own __init__
        source = relative.parts[0]
        for line, target in _imports(path):
            if target != source:
                yield f"{relative}:{line}", source, target


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()} - {"configs", "results"}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_imports_go_downward_only():
    upward = [f"{where}: {source} imports {target}" for where, source, target in _edges()
              if LAYERS[target] > LAYERS[source]]
    assert not upward, "\n".join(upward)


def test_no_cycles_between_packages():
    graph = {}
    for _, source, target in _edges():
        graph.setdefault(source, set()).add(target)

    def reaches(start, goal, seen=()):
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen + (nxt,)))
                   for nxt in graph.get(start, ()))

    cycles = sorted(package for package in graph if reaches(package, package))
    assert not cycles, cycles


def test_pretraining_and_llava_need_no_mm_libraries():
    """A GPU image without mmcv / mmengine / mmdet / mmseg still pretrains and trains LLaVA: only dense transfer
    imports them."""
    import subprocess
    import sys

    block = ("import sys\n"
             "class Block:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name.split('.')[0] in ('mmcv', 'mmengine', 'mmdet', 'mmseg'):\n"
             "            raise ImportError(name + ' is blocked')\n"
             "sys.meta_path.insert(0, Block())\n"
             "import utabench.pretrain.run, utabench.llava.pipeline, utabench.tasks\n")
    run = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
