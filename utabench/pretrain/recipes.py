"""The registry of pretraining recipes: a recipe class is built as `Recipe(cfg, device, dist)` and gives the trained
`module`, the `dataset`, `loss(model, batch, device)` and `export(out_dir, steps)` (and may give `collate`)."""

from utabench.core.registry import Registry

RECIPES: Registry = Registry("pretraining recipe", "pretraining recipes")
