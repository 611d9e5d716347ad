# UTA paper, Table 5, COCO, ViT-L (A.1): batch 128, 60k iterations, lr 6e-5, drop path 0.4, layer decay 0.8 (global
# blocks 5, 11, 17, 23). Decision: batch 128 as the UTA paper states; EVA-02's own L config used 144.
_base_ = ['./_base_/cascade_mask_rcnn_vitdet.py', './_base_/coco_instance_lsj.py']
model = dict(backbone=dict(out_indices=[23], window_size=16, global_blocks=[5, 11, 17, 23], drop_path_rate=0.4),
             neck=dict(in_channels=1024))
paper_batch_size = 128
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8), optimizer=dict(lr=6e-5))
