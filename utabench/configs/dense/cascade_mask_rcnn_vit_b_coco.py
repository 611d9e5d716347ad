# UTA paper, Table 5, COCO, ViT-B (A.1): batch 128, 60k iterations, lr 5e-5, drop path 0.1, layer decay 0.7; the rest
# is EVA-02's (window 16 at 1024 with global blocks 2, 5, 8, 11; LSJ 1024; lr x0.1 at 48k and 54k).
_base_ = ['./_base_/cascade_mask_rcnn_vitdet.py', './_base_/coco_instance_lsj.py']
model = dict(backbone=dict(out_indices=[11], window_size=16, global_blocks=[2, 5, 8, 11], drop_path_rate=0.1),
             neck=dict(in_channels=768))
paper_batch_size = 128
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.7), optimizer=dict(lr=5e-5))
