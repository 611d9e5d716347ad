# The embedded world's ADE20K-layout maps (ground + 10 shapes): the UperNet recipe in miniature (blocks 0-3 of a
# width-64 patch-8 ViT, 64 px crops, slide inference at stride 43 = 2/3 of the crop, narrow heads, 600 iterations:
# shape classes take this long to separate from the ground in per-pixel training). The pyramid is the paper's strides
# 4, 8, 16, 32: a patch-8 ViT needs rescales 2, 1, 0.5, 0.25 for them (the base's 4, 2, 1, 0.5 are for patch 16 and
# gave strides 2-16 here: the heads ran at 4x the pixels, 150 s for mIoU 15.3 where the paper's strides take 60 s for
# 18.4, world seed 0, UTA student; random init 10.2).
_base_ = ['./_base_/upernet_vit.py', './_base_/ade20k_512.py']
classes = ['ground', 'circle', 'square', 'triangle', 'star', 'cross', 'ring', 'diamond', 'hexagon', 'arrow', 'heart']
crop_size = (64, 64)
scale = (96, 96)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(out_indices=[0, 1, 2, 3], drop_path_rate=0.0, patch_size=None),
    neck=dict(embed_dim=64, rescales=[2, 1, 0.5, 0.25]),
    decode_head=dict(in_channels=[64] * 4, channels=64, num_classes=11),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=11),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(43, 43)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.8, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')]
# mmseg's ADE20KDataset only accepts subsets of ADE's 150 classes: the world's own classes go through BaseSegDataset
world_dataset = dict(type='BaseSegDataset', img_suffix='.jpg', seg_map_suffix='.png')
train_dataloader = dict(batch_size=8, dataset=dict(pipeline=train_pipeline, **world_dataset))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline, **world_dataset))
paper_batch_size = 8
max_iters = 600
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8), optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=60),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=60, end=max_iters)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=200, max_keep_ckpts=1))
log_processor = dict(window_size=10)
