"""Scenes of the embedded world and their rendering styles.

A scene is a background plus objects; each object has a class (a shape), a colour, a centre, a radius, a rotation
and its polygon(s) in pixel coordinates, so later tasks can derive boxes, masks and segmentation maps from the same
geometry. Styles render one scene as a photo, a line drawing (sketch), a cartoon or pixel-art rendition, a cluttered
and occluded photo (the ImageNet-A analogue) or on an unusual background at an unusual pose (ObjectNet analogue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "arrow", "heart")
COLORS = {
    "red": (205, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
    "purple": (130, 50, 170), "orange": (240, 130, 30), "white": (240, 240, 240), "black": (25, 25, 25),
    "cyan": (40, 190, 200), "pink": (235, 120, 170),
}
BACKGROUNDS = {
    "gray": (128, 128, 128), "beige": (215, 200, 170), "sky blue": (150, 190, 230), "pale green": (170, 210, 160),
    "dark": (45, 45, 55), "lavender": (200, 185, 225),
}
Point = Tuple[float, float]


@dataclass
class SceneObject:
    shape: str
    color: str
    center: Point
    radius: float
    angle: float  # radians

    @property
    def polygons(self) -> Tuple[List[Point], List[Point]]:
        """(outline, hole) in pixels; hole is empty except for the ring."""
        return shape_polygons(self.shape, self.center, self.radius, self.angle)

    @property
    def bbox(self) -> Tuple[float, float, float, float]:
        xs, ys = zip(*self.polygons[0])
        return min(xs), min(ys), max(xs), max(ys)


@dataclass
class Scene:
    size: Tuple[int, int]  # (width, height)
    background: str
    objects: List[SceneObject] = field(default_factory=list)


def _regular(n: int, r: float, phase: float = 0.0) -> List[Point]:
    return [(r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n)) for i in range(n)]


def _unit_outline(shape: str) -> Tuple[List[Point], List[Point]]:
    if shape == "circle":
        return _regular(48, 1.0), []
    if shape == "ring":
        return _regular(48, 1.0), _regular(48, 0.55)[::-1]
    if shape == "square":
        return _regular(4, 1.0, math.pi / 4), []
    if shape == "diamond":
        return [(0, -1.0), (0.62, 0), (0, 1.0), (-0.62, 0)], []
    if shape == "triangle":
        return _regular(3, 1.0, -math.pi / 2), []
    if shape == "hexagon":
        return _regular(6, 1.0), []
    if shape == "star":
        outer, inner = _regular(5, 1.0, -math.pi / 2), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair], []
    if shape == "cross":
        a, b = 0.3, 1.0
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a),
                (-a, -a)], []
    if shape == "arrow":
        return [(-1.0, -0.25), (0.2, -0.25), (0.2, -0.6), (1.0, 0), (0.2, 0.6), (0.2, 0.25), (-1.0, 0.25)], []
    if shape == "heart":
        ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        xs = 16 * np.sin(ts) ** 3 / 17
        ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts)) / 17
        return list(zip(xs.tolist(), ys.tolist())), []
    raise ValueError(f"unknown shape {shape}")


def shape_polygons(shape: str, center: Point, radius: float, angle: float) -> Tuple[List[Point], List[Point]]:
    cos, sin = math.cos(angle), math.sin(angle)

    def place(points: Sequence[Point]) -> List[Point]:
        return [(center[0] + radius * (x * cos - y * sin), center[1] + radius * (x * sin + y * cos)) for x, y in points]

    outline, hole = _unit_outline(shape)
    return place(outline), place(hole)


def sample_object(rng: np.random.Generator, shape: str, size: Tuple[int, int], scale: Tuple[float, float],
                  max_angle: float = 0.35, color: str | None = None) -> SceneObject:
    w, h = size
    radius = rng.uniform(*scale) * min(w, h) / 2
    cx = rng.uniform(radius, w - radius)
    cy = rng.uniform(radius, h - radius)
    color = color or str(rng.choice(list(COLORS)))
    return SceneObject(shape, color, (cx, cy), radius, rng.uniform(-max_angle, max_angle))


def _shade(color, amount: float):
    return tuple(int(max(0, min(255, c * amount))) for c in color)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, scale: float, fill, outline=None, width: int = 0,
                 hole_fill=None):
    """Fill the outline; the ring's hole is then painted with `hole_fill` (or only outlined)."""
    outer, hole = obj.polygons
    draw.polygon([(x * scale, y * scale) for x, y in outer], fill=fill, outline=outline, width=width)
    if hole:
        draw.polygon([(x * scale, y * scale) for x, y in hole], fill=hole_fill, outline=outline, width=width)


def _noise_background(rng, size, base, strength: float) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    direction = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(direction) * xx / w + np.sin(direction) * yy / h)[..., None]
    pixels = np.array(base, dtype=np.float32)[None, None, :] * (0.8 + 0.35 * ramp)
    pixels += rng.normal(0, strength, size=(h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render(scene: Scene, style: str, rng: np.random.Generator, supersample: int = 3) -> Image.Image:
    """Draw the scene in a style: photo, sketch, cartoon, pixel, clutter, unusual."""
    s = supersample
    w, h = scene.size
    big = (w * s, h * s)
    bg = BACKGROUNDS[scene.background]
    if style == "sketch":
        canvas = Image.new("RGB", big, (250, 250, 250))
    elif style in ("cartoon", "pixel"):
        canvas = Image.new("RGB", big, bg)
    elif style == "unusual":
        canvas = _stripes(rng, big)
    else:
        canvas = _noise_background(rng, big, bg, 12.0).filter(ImageFilter.GaussianBlur(s))
    draw = ImageDraw.Draw(canvas)
    if style == "clutter":
        for _ in range(int(rng.integers(2, 5))):
            other = sample_object(rng, str(rng.choice(SHAPES)), scene.size, (0.06, 0.14), math.pi)
            _draw_object(draw, other, s, COLORS[other.color], hole_fill=bg)
    for obj in scene.objects:
        color = COLORS[obj.color]
        if style == "sketch":
            _draw_object(draw, obj, s, None, outline=(20, 20, 20), width=2 * s)
        elif style in ("cartoon", "pixel"):
            _draw_object(draw, obj, s, color, outline=(0, 0, 0), width=3 * s, hole_fill=bg)
        else:  # a darker rim and a lighter body, as if lit from the front
            hole = bg if style != "unusual" else (90, 90, 90)
            body = SceneObject(obj.shape, obj.color, obj.center, obj.radius * 0.8, obj.angle)
            _draw_object(draw, obj, s, _shade(color, 0.8), hole_fill=hole)
            _draw_object(draw, body, s, color, outline=None, hole_fill=_shade(color, 0.8))
            if obj.polygons[1]:
                _draw_object(draw, SceneObject("circle", obj.color, obj.center, obj.radius * 0.55, 0), s, hole)
    if style == "clutter":
        for _ in range(int(rng.integers(1, 3))):  # occluding bars across the object
            y = rng.uniform(0.2, 0.8) * big[1]
            draw.rectangle([0, y, big[0], y + rng.uniform(0.04, 0.08) * big[1]], fill=(60, 50, 40))
    image = canvas.resize((w, h), Image.LANCZOS)
    if style == "pixel":
        image = image.resize((max(1, w // 6), max(1, h // 6)), Image.NEAREST).resize((w, h), Image.NEAREST)
    return image


def _stripes(rng, size) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    period = rng.uniform(0.05, 0.15) * w
    angle = rng.uniform(0, math.pi)
    wave = (np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * math.pi / period) > 0)[..., None]
    base = rng.integers(70, 186, 3)  # two stripe colours near one random base: unusual, yet not louder than the object
    a, b = base + rng.integers(6, 14, 3), base - rng.integers(6, 14, 3)
    return Image.fromarray(np.where(wave, a, b).astype(np.uint8))
