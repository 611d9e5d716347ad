"""Built backbones lent to the dense model. The runner has built the backbone already (weights read, checkpoint
hashed); the dense task lends it under a token, and the recipe's `UtabenchViT(backbone=dict(..., lent=TOKEN))` takes
it back instead of building it again. The dense model fine-tunes a copy of its vision tower, so the lent backbone
stays as the other tasks evaluate it. A config dumped into the work directory still names the backbone entry, so
it also runs on its own (the token is then unknown and the entry is built)."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Dict, Iterator, Optional

_LENT: Dict[str, Any] = {}


@contextlib.contextmanager
def lend(backbone) -> Iterator[str]:
    token = uuid.uuid4().hex
    _LENT[token] = backbone
    try:
        yield token
    finally:
        _LENT.pop(token, None)


def take(token: Optional[str]):
    """The backbone lent under `token`, or None."""
    return _LENT.get(token) if token else None
