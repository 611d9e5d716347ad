"""The embedded world: a seeded procedural image-caption world written in the standard dataset layouts, so every
task runs end to end with no downloaded data."""

from utabench.world.build import ensure_world, generate_world, world_root  # noqa: F401
