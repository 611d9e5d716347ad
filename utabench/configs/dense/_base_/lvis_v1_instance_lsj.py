# LVIS v1 (1203 categories, COCO 2017 images addressed by `coco_url`) with LSJ and repeat-factor sampling
# (ClassBalancedDataset, threshold 0.001); evaluated with the lvis package (300 detections per image).
dataset_type = 'LVISV1Dataset'
data_root = 'data/lvis/'
image_size = (1024, 1024)
lsj_ratio = (0.1, 2.0)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=lsj_ratio, keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
train_dataloader = dict(
    batch_size=2, num_workers=4, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='ClassBalancedDataset', oversample_thr=1e-3,
                 dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/lvis_v1_train.json',
                              data_prefix=dict(img=''), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                              pipeline=train_pipeline, backend_args=backend_args)))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/lvis_v1_val.json',
                 data_prefix=dict(img=''), test_mode=True, pipeline=test_pipeline, backend_args=backend_args))
test_evaluator = dict(type='LVISMetric', ann_file=data_root + 'annotations/lvis_v1_val.json', metric=['bbox', 'segm'],
                      backend_args=backend_args)
