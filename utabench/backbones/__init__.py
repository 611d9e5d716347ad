"""Backbone adapters: every family registers a builder in `BACKBONES`; `build_backbone` turns a spec into a model."""

from utabench.backbones import openclip, timm_eva02, uta  # noqa: F401  (registration)
from utabench.backbones.factory import build_backbone, parse_backbone_spec  # noqa: F401
