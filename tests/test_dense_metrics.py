"""Detection and segmentation metrics come from the standard evaluators (pycocotools through mmdet's CocoMetric, the
lvis package through LVISMetric, mmseg's IoUMetric); checked on tiny generated sets whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

import utabench.dense  # noqa: F401  (np.float alias for lvis)
from utabench.tasks.detection import detection_metrics

SIZE = 32


def _square(x0, y0, w, h):
    m = np.zeros((SIZE, SIZE), dtype=np.uint8)
    m[y0:y0 + h, x0:x0 + w] = 1
    return m


OBJECTS = [(1, _square(2, 2, 10, 10), 1), (1, _square(16, 16, 12, 12), 1), (2, _square(2, 18, 8, 12), 2)]


def _write(tmp_path, lvis: bool):
    images = [{"id": 1, "width": SIZE, "height": SIZE},
              {"id": 2, "width": SIZE, "height": SIZE}]
    anns = []
    for k, (image_id, m, cat) in enumerate(OBJECTS):
        rle = mask_utils.encode(np.asfortranarray(m))
        ann = {"id": k + 1, "image_id": image_id, "category_id": cat, "bbox": [float(v) for v in mask_utils.toBbox(rle)],
               "area": float(mask_utils.area(rle)), "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}
        if not lvis:
            ann["iscrowd"] = 0
        anns.append(ann)
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    if lvis:
        for image in images:
            present = {c for i, _, c in OBJECTS if i == image["id"]}
            image.update(neg_category_ids=[c for c in (1, 2) if c not in present], not_exhaustive_category_ids=[],
                         coco_url=f"http://x/val2017/{image['id']:012d}.jpg")
        for c in cats:
            c.update(frequency="f", image_count=1, instance_count=1, synonyms=[c["name"]], synset=c["name"], def_="")
    else:
        for image in images:
            image["file_name"] = f"{image['id']:012d}.jpg"
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def _predict(keep):
    """mmdet-style predictions: the ground-truth objects at indices `keep`, score 0.9 (labels 0-based)."""
    samples = []
    for image_id in (1, 2):
        objs = [(m, c) for k, (i, m, c) in enumerate(OBJECTS) if i == image_id and k in keep]
        boxes = [[float(v) for v in mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))] for m, _ in objs]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]).reshape(-1, 4)
        samples.append({"img_id": image_id, "ori_shape": (SIZE, SIZE), "pred_instances": {
            "bboxes": boxes, "scores": torch.full((len(objs),), 0.9), "labels": torch.tensor([c - 1 for _, c in objs]),
            "masks": torch.tensor(np.stack([m for m, _ in objs]) if objs else np.zeros((0, SIZE, SIZE))).bool()}})
    return samples


def _evaluate(metric_cls, kind, ann, keep):
    metric = metric_cls(ann_file=str(ann), metric=["bbox", "segm"])
    metric.dataset_meta = {"classes": ("a", "b")}
    metric.process({}, _predict(keep))
    return detection_metrics(metric.evaluate(2), kind)


@pytest.mark.parametrize("kind", ["coco", "lvis"])
def test_detection_metrics_known_answers(tmp_path, kind):
    from mmdet.evaluation import CocoMetric, LVISMetric

    cls = LVISMetric if kind == "lvis" else CocoMetric
    ann = _write(tmp_path, lvis=kind == "lvis")
    perfect = _evaluate(cls, kind, ann, keep={0, 1, 2})
    assert perfect["box_ap"] == pytest.approx(100.0) and perfect["mask_ap"] == pytest.approx(100.0)
    # class a has 2 objects and only one is found: precision 1 up to recall 0.5, nothing after, so 51 of the 101
    # recall points -> AP 51/101; class b is perfect; the mean over the two classes is (51/101 + 1) / 2
    half = _evaluate(cls, kind, ann, keep={0, 2})
    expected = 100 * (51 / 101 + 1) / 2
    assert half["box_ap"] == pytest.approx(expected, abs=0.051) and half["mask_ap"] == pytest.approx(expected, abs=0.051)


def test_segmentation_metric_known_answers():
    """mmseg's IoUMetric on hand-made maps, through the segmentation task's conversion into the record's metrics."""
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample

    from utabench.tasks.segmentation import Segmentation

    def sample(pred, gt):
        s = SegDataSample()
        s.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
        s.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
        return s.to_dict()

    gt = [[0, 0], [1, 1]]
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ("x", "y")}
    metric.process({}, [sample(gt, gt)])
    assert Segmentation().metrics(metric.evaluate(1), "ade20k") == {"mIoU": 100.0, "mAcc": 100.0, "aAcc": 100.0}
    metric = IoUMetric(iou_metrics=["mIoU"])
    metric.dataset_meta = {"classes": ("x", "y")}
    metric.process({}, [sample([[0, 1], [1, 1]], gt)])
    # class x: intersection 1, union 2 -> 50%; class y: intersection 2, union 3 -> 66.67%; mean 58.33 (mmseg's 2
    # places); accuracy: x 1/2, y 2/2 -> mAcc 75; pixels right 3 of 4 -> aAcc 75
    assert Segmentation().metrics(metric.evaluate(1), "ade20k") == {"mIoU": 58.33, "mAcc": 75.0, "aAcc": 75.0}


def test_kept_areas_give_intervals_equal_to_mmseg_on_each_resample(tmp_path):
    """KeptAreasIoUMetric reports IoUMetric's numbers and keeps each image's areas; the bootstrap of mIoU, mAcc and
    aAcc over images equals mmseg's own total_area_to_metrics on each resample's summed areas, written out."""
    from mmengine.structures import PixelData
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample

    from utabench.dense.iou_areas import KeptAreasIoUMetric
    from utabench.tasks.bootstrap import bootstrap_ci, iou_samples, point_metrics

    rng = np.random.default_rng(0)
    images = []
    for _ in range(17):
        gt = rng.integers(0, 4, (6, 7))
        pred = np.where(rng.random((6, 7)) < 0.6, gt, rng.integers(0, 4, (6, 7)))
        gt[0, 0] = 255  # mmseg's ignore index
        s = SegDataSample()
        s.pred_sem_seg, s.gt_sem_seg = PixelData(data=torch.tensor(pred)[None]), PixelData(data=torch.tensor(gt)[None])
        images.append(s.to_dict())
    theirs = IoUMetric(iou_metrics=["mIoU"])
    ours = KeptAreasIoUMetric(str(tmp_path / "areas.npz"), iou_metrics=["mIoU"])
    for metric in (theirs, ours):
        metric.dataset_meta = {"classes": ("a", "b", "c", "d")}
        metric.process({}, images)
    assert ours.evaluate(17) == theirs.evaluate(17)
    with np.load(tmp_path / "areas.npz") as kept:
        samples = iou_samples(**{name: kept[name] for name in kept.files})
    assert samples["intersect"].shape == (17, 4) and samples["label"].sum() == 17 * 41  # the ignored pixel left out

    def mmseg_on(index):
        totals = [torch.from_numpy(samples[name][index].sum(axis=0)) for name in ("intersect", "union", "pred",
                                                                                    "label")]
        m = IoUMetric.total_area_to_metrics(*totals, metrics=["mIoU"])
        return {"mIoU": 100 * np.nanmean(m["IoU"]), "mAcc": 100 * np.nanmean(m["Acc"]), "aAcc": 100 * float(m["aAcc"])}

    assert point_metrics(samples) == pytest.approx(mmseg_on(np.arange(17)), rel=1e-12)
    draws = np.random.default_rng(0)
    per = [mmseg_on(draws.integers(0, 17, size=17)) for _ in range(300)]
    got = bootstrap_ci(samples, resamples=300)
    for name in ("mIoU", "mAcc", "aAcc"):
        assert got[name] == pytest.approx(list(np.percentile([p[name] for p in per], [2.5, 97.5])), rel=1e-12)
