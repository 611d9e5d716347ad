"""The DataComp evaluation suite (mlfoundations/datacomp @4a8df19, `tasklist.yml`, `aggregate_scores.py`): its 38
scored tasks, each with DataComp's main metric, and the table that averages them as DataComp does.

`configs/datacomp.yaml` runs the suite on CLIP_benchmark's `wds_*` exports in one directory, and WinoGAViL on the
Hugging Face cache DataComp leaves there (`hf_cache`). Each task's record is found by its dataset name (the DataComp
key, `/` as `-`) among the records of its dataset type (`wds`; WinoGAViL `winogavil`); its main metric is read from
the record as below. The table gives, per backbone, the average over the 38 tasks (DataComp's "Average": each task
weighs the same) and DataComp's group averages (ImageNet; its 6 distribution shifts; the 13 VTAB tasks; the 3
retrieval tasks, WinoGAViL among them); an average that lacks tasks is shown with how many of its tasks ran, never as
the full one.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import pandas as pd

from utabench.core.tablespec import TableSpec, register_table


class SuiteTask(NamedTuple):
    key: str  # DataComp's task key; the dataset name in utabench's records is the key with / as -
    name: str
    metric: str  # DataComp's main metric, as utabench's metric name (retrieval: the mean of the two R@1)
    group: str = ""  # DataComp's aggregate it counts in, besides the average
    dataset_type: str = "wds"  # the type of the set its record ran on

    @property
    def dataset(self) -> str:
        return self.key.replace("/", "-")


VTAB, SHIFTS, RETRIEVAL = "VTAB", "ImageNet dist. shifts", "Retrieval"
# acc1 -> top1; mean_per_class_recall; Dollar Street acc_top5_wg -> top5_worst_group and GeoDE acc_wg / FMoW
# acc_worst_region -> top1_worst_group (by the first metadata field: income group, region); iWildCam F1-macro_all ->
# f1_macro; retrieval mean_recall@1 -> mean_r1; WinoGAViL jaccard_score_10-12 (the winogavil task's, same name)
SUITE = (
    SuiteTask("vtab/caltech101", "Caltech-101", "mean_per_class_recall", VTAB),
    SuiteTask("cifar10", "CIFAR-10", "top1"),
    SuiteTask("vtab/cifar100", "CIFAR-100", "top1", VTAB),
    SuiteTask("vtab/clevr_count_all", "CLEVR Counts", "top1", VTAB),
    SuiteTask("vtab/clevr_closest_object_distance", "CLEVR Distance", "top1", VTAB),
    SuiteTask("country211", "Country211", "top1"),
    SuiteTask("vtab/dtd", "Describable Textures", "top1", VTAB),
    SuiteTask("vtab/eurosat", "EuroSAT", "top1", VTAB),
    SuiteTask("fgvc_aircraft", "FGVC Aircraft", "mean_per_class_recall"),
    SuiteTask("food101", "Food-101", "top1"),
    SuiteTask("gtsrb", "GTSRB", "top1"),
    SuiteTask("imagenet1k", "ImageNet 1k", "top1", "ImageNet"),
    SuiteTask("imagenet_sketch", "ImageNet Sketch", "top1", SHIFTS),
    SuiteTask("imagenetv2", "ImageNet v2", "top1", SHIFTS),
    SuiteTask("imagenet-a", "ImageNet-A", "top1", SHIFTS),
    SuiteTask("imagenet-o", "ImageNet-O", "top1", SHIFTS),
    SuiteTask("imagenet-r", "ImageNet-R", "top1", SHIFTS),
    SuiteTask("vtab/kitti_closest_vehicle_distance", "KITTI Vehicle Distance", "top1", VTAB),
    SuiteTask("mnist", "MNIST", "top1"),
    SuiteTask("objectnet", "ObjectNet", "top1", SHIFTS),
    SuiteTask("vtab/flowers", "Oxford Flowers-102", "mean_per_class_recall", VTAB),
    SuiteTask("vtab/pets", "Oxford-IIIT Pet", "mean_per_class_recall", VTAB),
    SuiteTask("voc2007", "Pascal VOC 2007", "top1"),
    SuiteTask("vtab/pcam", "PatchCamelyon", "top1", VTAB),
    SuiteTask("renderedsst2", "Rendered SST2", "top1"),
    SuiteTask("vtab/resisc45", "RESISC45", "top1", VTAB),
    SuiteTask("cars", "Stanford Cars", "top1"),
    SuiteTask("stl10", "STL-10", "top1"),
    SuiteTask("sun397", "SUN397", "top1", VTAB),
    SuiteTask("vtab/svhn", "SVHN", "top1", VTAB),
    SuiteTask("retrieval/flickr_1k_test_image_text_retrieval", "Flickr", "mean_r1", RETRIEVAL),
    SuiteTask("retrieval/mscoco_2014_5k_test_image_text_retrieval", "MSCOCO", "mean_r1", RETRIEVAL),
    SuiteTask("misc/winogavil", "WinoGAViL", "jaccard_score_10-12", RETRIEVAL, "winogavil"),
    SuiteTask("wilds/iwildcam", "iWildCam", "f1_macro"),
    SuiteTask("wilds/camelyon17", "Camelyon17", "top1"),
    SuiteTask("wilds/fmow", "FMoW", "top1_worst_group"),
    SuiteTask("fairness/dollar_street", "Dollar Street", "top5_worst_group"),
    SuiteTask("fairness/geode", "GeoDE", "top1_worst_group"),
)
GROUPS = ("ImageNet", SHIFTS, VTAB, RETRIEVAL)


def main_metric(record: pd.Series, task: SuiteTask) -> Optional[float]:
    """A task's DataComp score (percent) from its record's flat row; None where the record lacks it."""
    def value(name):
        got = record.get(f"metrics.{name}")
        return float(got) if got is not None and pd.notna(got) else None

    if task.metric == "mean_r1":
        text, image = value("text_r1"), value("image_r1")
        return None if text is None or image is None else (text + image) / 2
    return value(task.metric)


def scores(records: pd.DataFrame) -> Dict[str, Dict[str, float]]:
    """backbone -> {task key: score} over the complete records whose dataset name and type are a suite task's."""
    by_dataset = {task.dataset: task for task in SUITE}
    out: Dict[str, Dict[str, float]] = {}
    done = records[(records.status == "complete") & records.dataset.isin(by_dataset)]
    for _, record in done.iterrows():
        task = by_dataset[record.dataset]
        if record.dataset_type != task.dataset_type:
            continue
        score = main_metric(record, task)
        if score is not None:
            out.setdefault(record.backbone, {})[task.key] = score
    return out


def _mean(values: List[float], of: int) -> Optional[str]:
    if not values:
        return None
    mean = f"{sum(values) / len(values):.2f}"
    return mean if len(values) == of else f"{mean} ({len(values)}/{of})"


def suite_rows(records: pd.DataFrame) -> List[dict]:
    """One row per backbone: tasks run, DataComp's average and its group averages (partial ones say so)."""
    rows = []
    for backbone, got in scores(records).items():
        row = {"backbone": backbone, "tasks": f"{len(got)}/{len(SUITE)}", "Average": _mean(list(got.values()),
                                                                                           len(SUITE))}
        for group in GROUPS:
            members = [task.key for task in SUITE if task.group == group]
            row[group] = _mean([got[key] for key in members if key in got], len(members))
        rows.append(row)
    return rows


register_table(TableSpec(
    100, "Table 100 (beyond the paper): the DataComp evaluation suite, DataComp's main metric per task (%)", "",
    rows=suite_rows, fill="`utabench run-all --config utabench/configs/datacomp.yaml --data DIR` on a directory of "
    "CLIP_benchmark's wds_* exports",
))
