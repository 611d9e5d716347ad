"""Safe checkpoint reading: safetensors, `torch.load(weights_only=True)`, or the tensors of a TorchScript archive
(OpenAI's CLIP releases) read by a restricted unpickler; never arbitrary unpickling, never code from a file.

A TorchScript archive (a zip with `constants.pkl`, `code/`, `data.pkl`, `data/`) is what `torch.jit.load` runs:
loading it executes the archive's TorchScript (its `__setstate__` methods, for one). Instead, `data.pkl` is read
with an unpickler that knows only tensors (`torch._utils._rebuild_tensor_v2`, typed storages read from `data/<key>`),
ordered dicts, TorchScript's list builders and the archive's module classes, which become inert attribute holders;
anything else (a global such as `os.system`, a module with custom `__getstate__`) is refused. The module tree is then
flattened to a state dict, as `torch.jit.load(...).state_dict()` would give it.

Also the strict-load helper that turns missing / unexpected keys into one readable error.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Mapping

import torch
from safetensors.torch import load_file

from utabench.core.errors import UtabenchError

_WRAPPERS = ("state_dict", "model", "module", "model_ema")
_STORAGES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
             "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
             "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
             "BoolStorage": torch.bool}


class _ScriptModule:
    """What a TorchScript module class of the archive becomes: the attributes its pickled state names, nothing else."""

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("a module with its own __getstate__ (its state is not plain attributes)")
        self.__dict__["state"] = state


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, *_ignored) -> torch.Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


class _TorchScriptUnpickler(pickle.Unpickler):
    def __init__(self, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self.archive, self.root, self.storages = archive, root, {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptModule
        if module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return list
        if (module, name) == ("torch.jit._pickle", "restore_type_tag"):
            return lambda value, _tag: value
        raise pickle.UnpicklingError(f"refers to {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"an unknown persistent object {kind!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
            self.storages[key] = (torch.frombuffer(raw, dtype=storage_type.dtype) if raw
                                  else torch.empty(0, dtype=storage_type.dtype))
        return self.storages[key]


def _flatten_modules(module: _ScriptModule, prefix: str, out: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    for name, value in module.__dict__.get("state", {}).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptModule):
            _flatten_modules(value, f"{prefix}{name}.", out)
    return out


def is_torchscript(path: str | Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def read_torchscript_state(path: str | Path) -> Dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, without running any of it."""
    with zipfile.ZipFile(path) as archive:
        roots = [name[: -len("/data.pkl")] for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(roots) != 1:
            raise UtabenchError(f"checkpoint {path} is a TorchScript archive without one data.pkl; expected a model "
                                "saved with torch.jit.save")
        order = f"{roots[0]}/byteorder"
        if order in archive.namelist() and archive.read(order).decode().strip() != "little":
            raise UtabenchError(f"checkpoint {path} stores big-endian tensors; re-save it on a little-endian machine")
        try:
            top = _TorchScriptUnpickler(archive, roots[0]).load()
        except (pickle.UnpicklingError, ValueError, TypeError, KeyError) as exc:
            raise UtabenchError(f"checkpoint {path} is a TorchScript archive whose data.pkl {exc}: utabench reads "
                                "only tensors from such archives; save `model.state_dict()` instead") from None
    if not isinstance(top, _ScriptModule):
        raise UtabenchError(f"checkpoint {path} is a TorchScript archive without a module; expected torch.jit.save")
    state = _flatten_modules(top, "", {})
    if not state:
        raise UtabenchError(f"checkpoint {path} is a TorchScript archive without tensors")
    return state


def read_state_dict(path: str | Path, raw: bool = False) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat {name: tensor} dict, unwrapping the usual containers (with `raw`, the
    loaded container as it is, e.g. a training state)."""
    path = Path(path)
    if not path.is_file():
        raise UtabenchError(f"checkpoint {path} does not exist; pass the path of a .safetensors, .pt, .pth or .bin file")
    if path.stat().st_size == 0:
        raise UtabenchError(f"checkpoint {path} is empty (0 bytes); {_RESAVE}")
    if path.suffix == ".safetensors":

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise UtabenchError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    if is_torchscript(path):
        return read_torchscript_state(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file makes the unpickler raise nearly anything (struct.error, IndexError)
        raise UtabenchError(f"checkpoint {path} {_why_unreadable(path, exc)}; {_RESAVE}") from None
    return obj if raw else unwrap_state_dict(obj, path)


_RESAVE = "expected a state dict saved by torch.save (.pt, .pth, .bin) or a .safetensors file"


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """What the file is, from its first bytes and what the tensors-only unpickler refused: torch's own message is
    not shown (it advises loading the file with weights_only=False, which runs whatever code the file holds)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    refused = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if refused:
        return (f"holds pickled objects that are not tensors ({refused.group(1)}), which utabench never unpickles; "
                "save only the state dict (torch.save(model.state_dict(), path))")
    if head == b"PK\x03\x04":
        return "is a zip archive, torch.save's format, that is truncated or damaged (copy or save it again)"
    if head[:1] == b"\x80":
        return "is a pickle, the legacy torch.save format, that is truncated or damaged (copy or save it again)"
    return "is not a checkpoint: neither a zip archive (torch.save), a pickle (legacy torch.save) nor safetensors"


def unwrap_state_dict(obj, path: str | Path = "<memory>") -> Dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise UtabenchError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise UtabenchError(f"checkpoint {path} holds no tensors; expected a state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _summarise(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """`load_state_dict(strict=True)` with one clear error listing missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(set(own) & set(state))
              if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (checkpoint vs model): {_summarise(shapes, 4)}")
        raise UtabenchError(
            f"checkpoint {source} does not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Check that the backbone spec names the architecture the checkpoint was trained with"
        )
    module.load_state_dict(state, strict=True)
