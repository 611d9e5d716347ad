"""The dense adapter against references: UtabenchViT equals the tower run with CLS and out-of-window keys masked;
patch-size conversion; layer-wise lr decay groups; the federated loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import utabench.dense  # noqa: F401  (registers the modules)
from utabench.backbones.factory import build_backbone
from utabench.backbones.patch_geometry import resize_grid, resize_patch_kernel
from utabench.dense.federated_loss import FederatedSigmoidLoss
from utabench.dense.patch_size import convert_trunk_patch_size
from utabench.dense.vit import UtabenchViT

RECIPES = Path(__file__).resolve().parents[1] / "utabench" / "configs" / "dense"


def _allowed(grid: int, window: int, global_block: bool) -> torch.Tensor:
    """(1 + N, 1 + N) True where a query may attend a key: CLS is never a key for patches; windows when local."""
    n = grid * grid
    ys, xs = torch.div(torch.arange(n), grid, rounding_mode="floor"), torch.arange(n) % grid
    win = (ys // window) * (grid // window) + xs // window if window else torch.zeros(n, dtype=torch.long)
    allowed = torch.ones(n + 1, n + 1, dtype=torch.bool)
    allowed[1:, 0] = False
    if window and not global_block:
        allowed[1:, 1:] = win[:, None] == win[None, :]
    return allowed


def _window_rope(eva, grid: int, window: int) -> torch.Tensor:
    """Each token gets the RoPE of its position inside its window (EVA-02 / ViTDet: RoPE of the window grid)."""
    from timm.layers import RotaryEmbeddingCat

    table = RotaryEmbeddingCat(eva.rope.dim, in_pixels=False, feat_shape=[window, window],
                               ref_feat_shape=eva.rope.ref_feat_shape).get_embed()
    ys, xs = torch.div(torch.arange(grid * grid), grid, rounding_mode="floor"), torch.arange(grid * grid) % grid
    return table[(ys % window) * window + xs % window]


def _reference_eva(eva, images, window, global_blocks):
    x = eva.patch_embed(images)
    x, rope = eva._pos_embed(x)
    grid = eva.patch_embed.grid_size[0]
    local_rope = _window_rope(eva, grid, window) if window else rope
    outs = []
    for i, block in enumerate(eva.blocks):
        block_rope = rope if i in global_blocks else local_rope
        x = block(x, rope=block_rope, attn_mask=_allowed(grid, window, i in global_blocks))
        outs.append(x[:, 1:])
    return outs


def _reference_clip(visual, images, window, global_blocks):
    x = visual._embeds(images)
    grid = visual.grid_size[0]
    outs = []
    for i, block in enumerate(visual.transformer.resblocks):
        mask = torch.zeros(grid * grid + 1, grid * grid + 1)
        mask[~_allowed(grid, window, i in global_blocks)] = float("-inf")
        x = block(x, attn_mask=mask)
        outs.append(x[:, 1:])
    return outs


@pytest.mark.parametrize("spec,reference", [("uta:tiny", "eva"), ("clip:utabench-clip-tiny", "clip")])
@pytest.mark.parametrize("window", [0, 4])
def test_dense_vit_equals_masked_tower(spec, reference, window):
    torch.manual_seed(0)
    dense = UtabenchViT({"spec": spec}, out_indices=[0, 1, 2, 3], window_size=window, global_blocks=[1, 3]).eval()
    tower = build_backbone(spec).vision_tower()
    size = tower.patch_embed.img_size[0] if reference == "eva" else tower.image_size[0]
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ours = dense(images)
        ref = (_reference_eva if reference == "eva" else _reference_clip)(tower, images, window, {1, 3})
    grid = ours[0].shape[-1]
    for mine, theirs in zip(ours, ref):
        torch.testing.assert_close(mine.flatten(2).transpose(1, 2), theirs, atol=2e-5, rtol=1e-4)
    assert grid * grid == ref[0].shape[1]


def test_dense_vit_other_sizes_pad_windows_and_resize_embeddings():
    dense = UtabenchViT("uta:tiny", out_indices=[-1], window_size=4, global_blocks=[3]).eval()
    with torch.no_grad():
        out = dense(torch.randn(1, 3, 56, 72))  # 7 x 9 grid: windows padded to 8 x 12
    assert out[0].shape == (1, 64, 7, 9)
    assert torch.isfinite(out[0]).all()


def test_patch_14_to_16_conversion():
    kernel = torch.ones(4, 3, 14, 14)
    resized = resize_patch_kernel(kernel, 16)
    assert resized.shape == (4, 3, 16, 16)
    torch.testing.assert_close(resized, torch.ones_like(resized))  # bicubic keeps a constant kernel constant
    dense = UtabenchViT("uta:B-14").eval()  # patch 14 at 224: a 16 x 16 grid
    before = dense.trunk.pos_embed.detach().clone()
    convert_trunk_patch_size(dense.trunk, 16)
    assert dense.trunk.proj.weight.shape == (768, 3, 16, 16) and dense.trunk.pos_embed.shape == (1, 14, 14, 768)
    ramp = torch.linspace(0, 1, 16)[None, :, None, None].expand(1, 16, 16, 768)  # a smooth grid stays smooth
    torch.testing.assert_close(resize_grid(ramp, (14, 14))[0, :, 0, 0], torch.linspace(0, 1, 14), atol=0.03, rtol=0)
    assert not torch.equal(before[:, :14, :14], dense.trunk.pos_embed.detach())


def test_dense_vit_converts_its_patch_size():
    dense = UtabenchViT("uta:tiny", patch_size=16).eval()  # tiny is patch 8 at 64 px: 8x8 grid -> 4x4
    assert dense.patch_size == 16 and tuple(dense.trunk.pos_embed.shape[1:3]) == (4, 4)
    with torch.no_grad():
        assert dense(torch.randn(1, 3, 64, 64))[0].shape == (1, 64, 4, 4)


@pytest.mark.parametrize("decay_all", [False, True])
def test_layer_decay_groups(decay_all):
    from mmengine.optim import build_optim_wrapper
    from torch import nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = UtabenchViT("uta:tiny")
            self.head = nn.Linear(64, 3)

    model = Model()
    wrapper = build_optim_wrapper(model, dict(
        type="OptimWrapper", constructor="LayerDecayConstructor",
        paramwise_cfg=dict(layer_decay_rate=0.5, weight_decay_all=decay_all),
        optimizer=dict(type="AdamW", lr=1.0, weight_decay=0.1)))
    lr_of, wd_of = {}, {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            lr_of[names[id(p)]], wd_of[names[id(p)]] = group["lr"], group["weight_decay"]
    assert len(lr_of) == len(names)
    assert lr_of["backbone.trunk.proj.weight"] == pytest.approx(0.5 ** 5)  # embeddings: layer 0 of 4 blocks
    assert lr_of["backbone.trunk.blocks.0.attn.q_proj.weight"] == pytest.approx(0.5 ** 4)
    assert lr_of["backbone.trunk.blocks.3.mlp.fc2.weight"] == pytest.approx(0.5 ** 1)
    assert lr_of["head.weight"] == 1.0
    assert wd_of["head.weight"] == 0.1
    if decay_all:  # EVA-02's detection rule: norms, biases and position embeddings decay too
        assert set(wd_of.values()) == {0.1}
    else:  # BEiT's: they do not
        assert wd_of["head.bias"] == 0.0 and wd_of["backbone.trunk.pos_embed"] == 0.0
        assert wd_of["backbone.trunk.blocks.0.norm1.weight"] == 0.0


@pytest.mark.parametrize("recipe", sorted(p.stem for p in RECIPES.glob("*.py")))
def test_every_bundled_recipe_loads(recipe):
    """(The paper's LVIS recipes once defined `model` in two sibling bases, which mmengine refuses.)"""
    from utabench.dense.recipe import load_recipe

    cfg = load_recipe(recipe)
    assert cfg.model.backbone.type == "UtabenchViT" and cfg.train_cfg.max_iters > 0


@pytest.mark.parametrize("recipe,iters,batch,steps", [
    ("cascade_mask_rcnn_vit_b_coco", 60000, 128, [48000, 54000]),
    ("cascade_mask_rcnn_vit_l_coco", 60000, 128, [48000, 54000]),
    ("cascade_mask_rcnn_vit_b_lvis", 100000, 64, [80000, 90000]),
    ("cascade_mask_rcnn_vit_l_lvis", 100000, 64, [80000, 90000]),
    ("cascade_mask_rcnn_world_coco", 150, 4, [120, 135]),
])
def test_detection_recipes_follow_eva02(recipe, iters, batch, steps):
    """EVA-02's schedule (warm-up 1000 from 0.001 x lr, x0.1 at 80% and 90%), weight decay on every parameter, no
    clipping, square padding at 1024 also at test; the world recipe has the same shape."""
    from utabench.dense.recipe import load_recipe

    cfg = load_recipe(recipe)
    warmup, multistep = cfg.param_scheduler
    assert (cfg.train_cfg.max_iters, cfg.paper_batch_size, multistep["milestones"]) == (iters, batch, steps)
    assert [m / iters for m in multistep["milestones"]] == [0.8, 0.9] and multistep["gamma"] == 0.1
    if iters > 1000:
        assert (warmup["start_factor"], warmup["end"]) == (0.001, 1000)
        assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.pixel_norm == "recipe"
        assert cfg.model.data_preprocessor.square_size == 1024
    assert cfg.optim_wrapper.paramwise_cfg.weight_decay_all and cfg.optim_wrapper.clip_grad is None
    assert cfg.optim_wrapper.optimizer.weight_decay == (0.1 if iters > 1000 else 0.05)
    assert cfg.model.data_preprocessor.type == "SquarePadDetDataPreprocessor"
    assert "batch_augments" not in cfg.model.data_preprocessor


def test_test_images_reach_the_backbone_on_the_training_grid(world, tmp_path):
    """The paper recipe's test pipeline and preprocessor on a non-square COCO image (96 x 64, resized to 1024 x
    683): the backbone receives 1024 x 1024 batches, the 64 x 64 grid of training, not 1024 x 704 (64 x 44)."""
    import shutil

    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from PIL import Image

    from utabench.datasets.dense import load_coco_instances
    from utabench.dense.recipe import fill_recipe, load_recipe

    root = tmp_path / "coco"
    shutil.copytree(world / "coco", root)
    for path in (root / "val2017").iterdir():
        Image.open(path).convert("RGB").crop((0, 0, 96, 64)).save(path)
    cfg = load_recipe("cascade_mask_rcnn_vit_b_coco")
    data = load_coco_instances({"type": "coco-instances", "root": str(root), "name": "coco"})
    cfg.classes = data.classes
    fill_recipe(cfg, "b", "coco", {"spec": "uta:tiny"}, data, {}, ((0.5,) * 3, (0.5,) * 3), tmp_path, 1, 0)
    cfg.test_dataloader.dataset.pipeline = [t for t in cfg.test_dataloader.dataset.pipeline
                                            if t["type"] != "LoadAnnotations"]  # the boxes are not looked at here
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    with DefaultScope.overwrite_default_scope("mmdet"):
        batch = next(iter(Runner.build_dataloader(cfg.test_dataloader)))
    assert tuple(batch["inputs"][0].shape[-2:]) == (683, 1024)  # the image itself is not square
    out = preprocessor(batch, training=False)
    assert tuple(out["inputs"].shape[-2:]) == (1024, 1024)
    assert out["data_samples"][0].batch_input_shape == (1024, 1024)
    vit = UtabenchViT("uta:tiny", patch_size=16)
    seen = []
    vit.register_forward_hook(lambda module, args, output: seen.append(tuple(output[0].shape[-2:])))
    with torch.no_grad():
        vit.eval()(out["inputs"][:, :, :256, :256])  # (a corner: the grid arithmetic is the same)
    assert seen == [(16, 16)] and 1024 // vit.patch_size == 64


def _bce_by_hand(x: float, positive: bool) -> float:
    """Binary cross-entropy of one logit, written out: -log(sigmoid(x)) or -log(1 - sigmoid(x))."""
    import math

    return math.log1p(math.exp(-x)) if positive else math.log1p(math.exp(x))


def test_federated_loss_scores_ground_truth_and_sampled_classes():
    """The expectation is written out by hand: the mean over RoIs of the summed binary cross-entropies of the scored
    classes only (ground truth classes, then frequency-sampled ones; a class never seen is never sampled)."""
    scores = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.5, -2.0], [-0.5, 1.0, -1.5, 2.5, 0.0, 0.3],
                           [0.2, 0.4, -0.6, 0.8, -1.0, 1.2]])
    labels = torch.tensor([1, 3, 6])  # RoIs of classes 1 and 3, and one background RoI (label 6)

    def by_hand(classes):
        total = sum(_bce_by_hand(float(scores[r, c]), int(labels[r]) == c) for r in range(3) for c in classes)
        return torch.tensor(total / 3)

    only_present = FederatedSigmoidLoss(num_classes=6, class_image_counts=[100, 50, 10, 5, 1, 0], num_sampled=2)
    assert sorted(only_present.scored_classes(labels).tolist()) == [1, 3]  # enough classes present: none sampled
    torch.testing.assert_close(only_present(scores, labels), by_hand([1, 3]))
    all_seen = FederatedSigmoidLoss(num_classes=6, class_image_counts=[100, 50, 10, 5, 1, 0], num_sampled=6)
    assert sorted(all_seen.scored_classes(labels).tolist()) == [0, 1, 2, 3, 4]  # class 5 has no images
    torch.testing.assert_close(all_seen(scores, labels), by_hand([0, 1, 2, 3, 4]))
    torch.manual_seed(0)
    sampled = FederatedSigmoidLoss(num_classes=6, class_image_counts=[100, 50, 10, 5, 1, 0], num_sampled=3)
    classes = sampled.scored_classes(labels).tolist()
    assert len(classes) == 3 and {1, 3} <= set(classes) and 5 not in classes
    assert sampled.get_activation(scores).shape == (3, 7)
