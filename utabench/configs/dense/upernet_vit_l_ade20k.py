# UTA paper, Table 4, ADE20K, ViT-L: batch 32, 60k iterations, lr 4e-5, drop path 0.2, layer decay 0.9, blocks
# 7, 11, 15, 23, UPerHead channels 1024.
_base_ = ['./_base_/upernet_vit.py', './_base_/ade20k_512.py']
model = dict(backbone=dict(out_indices=[7, 11, 15, 23], drop_path_rate=0.2), neck=dict(embed_dim=1024),
             decode_head=dict(in_channels=[1024] * 4, channels=1024), auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.9), optimizer=dict(lr=4e-5))
