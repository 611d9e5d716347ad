# LVIS heads: sigmoid cross-entropy with the federated loss (50 classes per batch, frequency power 0.5; utabench
# fills `class_image_counts` from the training annotations), 300 detections per image at score >= 0.02. It extends
# the Cascade Mask R-CNN base (mmengine refuses one key defined by two sibling bases).
_base_ = ['./cascade_mask_rcnn_vitdet.py']
norm = dict(type='LN2d', eps=1e-6)
model = dict(
    roi_head=dict(bbox_head=[
        dict(type='Shared4Conv1FCBBoxHead', in_channels=256, conv_out_channels=256, fc_out_channels=1024,
             roi_feat_size=7, num_classes=1203, norm_cfg=norm, reg_class_agnostic=True,
             bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
             loss_cls=dict(type='FederatedSigmoidLoss', num_classes=1203, class_image_counts=None, num_sampled=50,
                           power=0.5, loss_weight=1.0),
             loss_bbox=dict(type='L1Loss', loss_weight=1.0))
        for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])]),
    test_cfg=dict(rcnn=dict(score_thr=0.02, nms=dict(type='nms', iou_threshold=0.5), max_per_img=300,
                            mask_thr_binary=0.5)))
