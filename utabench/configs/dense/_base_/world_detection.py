# The embedded world's miniature of the detection recipe: same architecture and losses, sized for 96 px images, a
# patch-8 ViT of width 64 and 2 CPU cores: window 6 with global blocks 1 and 3, pyramid scales 2, 1, 0.5 (+ max-pool)
# at strides 4, 8, 16, 32, heads of width 32-64, RoIAlign with one sample per bin (mmcv's CPU RoIAlign, backward most
# of all, was a third of a step at 2x2), 32 sampled RoIs per image, 150 iterations. The dataset configs that follow
# it set the world's pipelines (96 px, mild scale jitter).
_base_ = ['./cascade_mask_rcnn_vitdet.py']
classes = ['circle', 'square', 'triangle', 'star', 'cross', 'ring', 'diamond', 'hexagon', 'arrow', 'heart']
norm = dict(type='LN2d', eps=1e-6)
pixel_norm = 'backbone'  # the world students were trained with their own (CLIP) normalisation
model = dict(
    data_preprocessor=dict(square_size=96),
    backbone=dict(out_indices=[3], window_size=6, global_blocks=[1, 3], drop_path_rate=0.0, patch_size=None),
    neck=dict(in_channels=64, out_channels=64, scale_factors=[2.0, 1.0, 0.5]),
    rpn_head=dict(in_channels=64, feat_channels=64, num_convs=1,
                  anchor_generator=dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32])),
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=1), out_channels=64,
                                featmap_strides=[4, 8, 16]),
        bbox_head=[
            dict(type='Shared4Conv1FCBBoxHead', in_channels=64, conv_out_channels=32, fc_out_channels=256,
                 roi_feat_size=7, num_classes=10, norm_cfg=norm, reg_class_agnostic=True,
                 bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                 loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                 loss_bbox=dict(type='L1Loss', loss_weight=1.0))
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])],
        mask_roi_extractor=dict(roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=1), out_channels=64,
                                featmap_strides=[4, 8, 16]),
        mask_head=dict(in_channels=64, conv_out_channels=32, num_classes=10)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=32)),
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=[dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                                 match_low_quality=False, ignore_iof_thr=-1),
                   sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25, neg_pos_ub=-1,
                                add_gt_as_proposals=True),
                   mask_size=28, pos_weight=-1, debug=False)
              for iou in (0.5, 0.6, 0.7)]),
    test_cfg=dict(rpn=dict(nms_pre=300, max_per_img=50)))
paper_batch_size = 4
max_iters = 150
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8), optimizer=dict(lr=1e-3, weight_decay=0.05))
param_scheduler = [  # the paper recipe's shape: warm-up, then x0.1 at 80% and 90%
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=15),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[120, 135], gamma=0.1)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=50, max_keep_ckpts=1))
log_processor = dict(window_size=10)
