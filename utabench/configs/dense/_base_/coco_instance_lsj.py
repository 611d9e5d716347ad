# COCO 2017 instances with large-scale jitter (LSJ, scale 0.1-2.0 of 1024, crop 1024). utabench fills `data_root`
# and checks the annotation files' categories against `classes` before anything is built.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
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
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=train_pipeline, backend_args=backend_args))
test_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=False, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True, pipeline=test_pipeline, backend_args=backend_args))
test_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json',
                      metric=['bbox', 'segm'], format_only=False, backend_args=backend_args)
