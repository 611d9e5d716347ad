# UTA paper, Table 5, LVIS, ViT-B (A.1): batch 64, 100k iterations, lr 1e-4, drop path 0.1, layer decay 0.7 (as on
# COCO); steps at 80% / 90% and 1000 warm-up iterations as EVA-02. Decision: batch and length as the UTA paper states;
# EVA-02's own LVIS configs used batch 128 for 50k (B) / 40k (L) iterations at the same lr.
_base_ = ['./_base_/lvis_federated_heads.py', './_base_/lvis_v1_instance_lsj.py']
model = dict(backbone=dict(out_indices=[11], window_size=16, global_blocks=[2, 5, 8, 11], drop_path_rate=0.1),
             neck=dict(in_channels=768))
paper_batch_size = 64
max_iters = 100000
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7), optimizer=dict(lr=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[80000, 90000], gamma=0.1)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
