# UTA paper, Table 4, ADE20K, ViT-B: batch 32, 60k iterations, lr 6e-5, drop path 0.15, layer decay 0.85, blocks
# 3, 5, 7, 11, UPerHead channels 768.
_base_ = ['./_base_/upernet_vit.py', './_base_/ade20k_512.py']
model = dict(backbone=dict(out_indices=[3, 5, 7, 11], drop_path_rate=0.15), neck=dict(embed_dim=768),
             decode_head=dict(in_channels=[768] * 4, channels=768), auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.85), optimizer=dict(lr=6e-5))
