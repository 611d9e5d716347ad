# UperNet on a ViT from the utabench registry (BEiT / EVA-02 segmentation recipe): four block outputs, each made one
# pyramid level by Feature2Pyramid (2x deconv twice = 4x, deconv = 2x, identity, max-pool), UPerHead (pool scales
# 1, 2, 3, 6) and an auxiliary FCN head (weight 0.4); slide inference with 512 crops at stride 341.
custom_imports = dict(imports=['utabench.dense'], allow_failed_imports=False)
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(512, 512)),
    backbone=dict(type='UtabenchViT', backbone=None, out_indices=[3, 5, 7, 11], window_size=0, global_blocks=[],
                  drop_path_rate=0.15, with_cp=False, patch_size=16),
    neck=dict(type='Feature2Pyramid', embed_dim=768, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(type='UPerHead', in_channels=[768, 768, 768, 768], in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                     channels=768, dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(type='FCNHead', in_channels=768, in_index=2, channels=256, num_convs=1, concat_input=False,
                        dropout_ratio=0.1, num_classes=150, norm_cfg=norm_cfg, align_corners=False,
                        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))

# AdamW with layer-wise lr decay, linear warm-up 1500 iterations then poly decay; iterations and lr are for
# `paper_batch_size` images per step and are rescaled by utabench to the user's GPUs.
paper_batch_size = 32
max_iters = 60000
optim_wrapper = dict(
    type='OptimWrapper', constructor='LayerDecayConstructor', paramwise_cfg=dict(layer_decay_rate=0.85),
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=max_iters)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
test_cfg = dict(type='TestLoop')
default_scope = 'mmseg'
default_hooks = dict(
    timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'WARNING'
