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


# ----------------------------------------------------------------------------------------------------------------
# modules: no import circle at all, and a function-local import only to defer a heavy optional library

# third-party libraries that are slow to import or optional: a function may import them (or a utabench module that
# imports them at its top) when it needs them, so that `utabench list`, the harness and CPU-only runs go without
HEAVY = ("mmcv", "mmengine", "mmdet", "mmseg", "transformers", "tokenizers", "open_clip", "timm", "submitit",
         "matplotlib", "webdataset", "lvis", "pycocotools", "torchvision", "requests", "fcntl", "datasets", "pyarrow")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_files():
    for path in sorted(ROOT.rglob("*.py")):
        if path.relative_to(ROOT).parts[0] not in ("configs", "results"):
            yield _module(path), path


def _imported(node, modules) -> list:
    """The modules an import statement names (`from a import b` names a.b where that is a module, else a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
        return []
    subs = [f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules]
    return subs or [node.module]


def _top_and_local():
    """module -> (what it imports at its top, what its functions import)."""
    modules = dict(_module_files())
    out = {}
    for name, path in modules.items():
        top, local = set(), set()
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            for target in _imported(node, modules):
                (local if id(node) in inner else top).add(target)
        out[name] = (top, local)
    return out


def test_no_import_circle_between_modules():
    """Counting the imports inside functions too: a circle needs deferred imports to work at all."""
    graph = {name: {t for t in top | local if t in dict(_module_files()) and t != name}
             for name, (top, local) in _top_and_local().items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
                on.discard(part[-1])
            if len(part) > 1:
                circles.append(sorted(part))

    for module in graph:
        if module not in index:
            visit(module)
    assert not circles, circles


def test_function_local_imports_only_defer_heavy_libraries():
    """A function may import a heavy library, torch itself (the world's numpy-only generation workers and the
    machine probe go without it), or a utabench module that imports a heavy library at its top."""
    imports = _top_and_local()

    def heavy(module, seen=()):
        if module.split(".")[0] in HEAVY + (() if seen else ("torch",)):
            return True
        parts = module.split(".")  # importing a module runs its packages' __init__ first
        top = set().union(*(imports.get(".".join(parts[:n]), (set(), set()))[0] for n in range(2, len(parts) + 1)))
        return any(heavy(t, seen + (module,)) for t in top
                   if t not in seen and t.split(".")[0] in HEAVY + ("utabench",))

    light = sorted(f"{module} imports {target} in a function" for module, (_, local) in imports.items()
                   for target in local if not heavy(target))
    assert not light, "\n".join(light)
