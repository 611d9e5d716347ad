# Cascade Mask R-CNN, ViTDet style: EVA-02's detection recipe (baaivision/EVA, EVA-02/det, detectron2 LazyConfigs;
# "EVA2" below means projects/ViTDet/configs/eva2_mim_to_coco/eva2_coco_cascade_mask_rcnn_vitdet_b_4attn_1024_lrd0p7.py
# and its bases) in mmdet terms: a ViT from the utabench registry (no CLS, window attention with a few global blocks),
# the simple feature pyramid (scales 4, 2, 1, 0.5 + max-pool, LN), RPN with 2 convs, three cascade stages (IoU 0.5 /
# 0.6 / 0.7) with 4conv1fc LN heads and class-agnostic regression, a 4-conv LN mask head. `num_classes` is set by
# utabench from the dataset's class list.
custom_imports = dict(imports=['utabench.dense'], allow_failed_imports=False)
norm = dict(type='LN2d', eps=1e-6)
# Pixels: EVA2 normalises with ImageNet's RGB mean / std (detectron2's constants), not CLIP's; `pixel_norm = 'recipe'`
# keeps these ('backbone' would take the backbone's own eval normalisation, as the world recipes do).
pixel_norm = 'recipe'
# Every batch, at training and at test, is padded to the 1024 square after normalisation (EVA2 / ViTDet
# `square_pad=1024`), so the ViT always sees the 64 x 64 grid (patch 16) it is fine-tuned on.
model = dict(
    type='CascadeRCNN',
    data_preprocessor=dict(
        type='SquarePadDetDataPreprocessor', square_size=1024, mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32),
    backbone=dict(type='UtabenchViT', backbone=None, out_indices=[-1], window_size=16, global_blocks=[2, 5, 8, 11],
                  drop_path_rate=0.1, with_cp=False, patch_size=16),
    neck=dict(type='SimpleFeaturePyramid', in_channels=768, out_channels=256, scale_factors=[4.0, 2.0, 1.0, 0.5]),
    rpn_head=dict(
        type='RPNHead', in_channels=256, feat_channels=256, num_convs=2,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='CascadeRoIHead', num_stages=3, stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        bbox_head=[
            dict(type='Shared4Conv1FCBBoxHead', in_channels=256, conv_out_channels=256, fc_out_channels=1024,
                 roi_feat_size=7, num_classes=80, norm_cfg=norm, reg_class_agnostic=True,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])],
        mask_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256, conv_out_channels=256, num_classes=80,
                       norm_cfg=norm, loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=2000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=[
            dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                               match_low_quality=False, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                 mask_size=28, pos_weight=-1, debug=False)
            for iou in (0.5, 0.6, 0.7)]),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5)))

# Optimisation, EVA2 (the UTA paper, A.1, "follows most of the hyper-parameter settings in EVA-02" and states batch,
# iterations, lr, drop path and layer decay, which the dataset / size files below set):
# - AdamW, betas (0.9, 0.999), weight decay 0.1 (EVA2 configs/common/optim.py) on EVERY parameter: EVA2 sets
#   `optimizer.params.weight_decay_norm = None` and `overrides = {}`, dropping ViTDet's exemptions of norms and
#   pos_embed (`weight_decay_all`); no gradient clipping (EVA2's AMPTrainer clips nothing).
# - layer-wise lr decay rate ** (num_layers + 1 - layer_id), embeddings 0, block i -> i + 1, the rest num_layers + 1
#   (EVA2 get_vit_lr_decay_rate); 0.7 for B, 0.8 for L.
# - fp16 mixed precision with dynamic loss scaling (EVA2 `train.amp.enabled = True`, fp16 autocast + GradScaler);
#   utabench runs fp32 on CPU processes.
# - schedule: linear warm-up over 1000 iterations from 0.001 x lr, then lr x 0.1 at 80% and 90% of training (EVA2:
#   `milestones = [max_iter*8//10, max_iter*9//10]`, `warmup_length = 1000 / max_iter`, `warmup_factor=0.001`).
# Iterations, warm-up, steps and lr are for `paper_batch_size` images per step and are rescaled by utabench to the
# batch the user's GPUs give (lr linearly, iterations inversely).
paper_batch_size = 128
max_iters = 60000
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic', constructor='LayerDecayConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.7, weight_decay_all=True),
    optimizer=dict(type='AdamW', lr=5e-5, betas=(0.9, 0.999), weight_decay=0.1), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[48000, 54000], gamma=0.1)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
test_cfg = dict(type='TestLoop')
default_scope = 'mmdet'
default_hooks = dict(
    timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'WARNING'
