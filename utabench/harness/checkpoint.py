"""Safe checkpoint reading: safetensors or `torch.load(weights_only=True)`, never arbitrary unpickling.

Also the strict-load helper that turns missing / unexpected keys into one readable error.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Dict, Mapping

import torch

from utabench.harness.errors import UtabenchError

_WRAPPERS = ("state_dict", "model", "module", "model_ema")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path, raw: bool = False) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat {name: tensor} dict, unwrapping the usual containers (with `raw`, the
    loaded container as it is, e.g. a training state)."""
    path = Path(path)
    if not path.is_file():
        raise UtabenchError(f"checkpoint {path} does not exist; pass the path of a .safetensors, .pt, .pth or .bin file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise UtabenchError(f"checkpoint {path} is not a readable safetensors file: {exc}") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                raise UtabenchError(
                    f"checkpoint {path} is a TorchScript archive; utabench loads state dicts only: "
                    "save `model.state_dict()` (or use open_clip's state-dict release of the weights)"
                )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UtabenchError(
            f"checkpoint {path} holds pickled objects that are not tensors and was refused (loaded with "
            f"weights_only=True; {first}); re-save it as a plain state dict or as .safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise UtabenchError(f"checkpoint {path} could not be read as a torch state dict: {exc}") from None
    return obj if raw else unwrap_state_dict(obj, path)


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
