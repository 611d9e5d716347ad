"""How the world's captions and answers say things: lists of objects, and where an object is in the image."""

from __future__ import annotations

from typing import List, Sequence

from utabench.world.scene import SceneObject


def join_phrases(parts: List[str]) -> str:
    """'a, b and c'."""
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def where_in_image(obj: SceneObject, size: Sequence[int]) -> str:
    """'top left', 'centre', 'bottom', ... from the object's centre."""
    x, y = obj.center[0] / size[0], obj.center[1] / size[1]
    horizontal = "left" if x < 0.4 else "right" if x > 0.6 else "middle"
    vertical = "top" if y < 0.4 else "bottom" if y > 0.6 else "centre"
    return f"{vertical} {horizontal}" if horizontal != "middle" else vertical
