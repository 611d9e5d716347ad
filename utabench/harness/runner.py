"""Plan and run (backbone, task, dataset) jobs, writing one result record per job.

Every dataset a pending job needs is loaded (and so validated) before any model is built, so bad input fails
before work starts. Finished records are skipped unless forced; each record is written the moment its job ends,
so an interrupted run loses nothing that finished.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from utabench.backbones.factory import build_backbone, parse_backbone_spec
from utabench.core.context import RunContext
from utabench.core.distributed import barrier, broadcast
from utabench.core.errors import NotApplicable, UtabenchError
from utabench.core.fingerprint import fingerprint
from utabench.core.progress import Progress
from utabench.core.registry import BACKBONES, TASKS
from utabench.harness import provenance
from utabench.harness.record import Record
from utabench.harness.store import RecordLock, cell_name, is_done, read_record, record_path, write_record
from utabench.tasks.bootstrap import bootstrap_ci, ci_method, samples_file, save_samples


def evaluation_only(task: str) -> bool:
    """Whether a task's jobs only evaluate (`Task.cost`): seconds to minutes a dataset, one GPU each."""
    return TASKS.get(task).cost == "evaluation"


@dataclass
class Job:
    backbone: Dict[str, Any]  # the backbone entry (spec, checkpoint, options), without `paper` / `pretrain`
    backbone_key: str
    paper: Optional[Dict[str, Any]]
    pretrain: Optional[Dict[str, Any]]  # how the backbone was pretrained, when utabench pretrained it
    task: str
    dataset: Dict[str, Any]
    path: Path

    @property
    def cell(self) -> str:
        """The job's name in a launched sweep: its record's path under the results directory, without `.json`."""
        return cell_name(self.path)


def plan_jobs(backbones: List[Any], tasks: Dict[str, List[Dict[str, Any]]], results: Path) -> List[Job]:
    jobs = []
    for entry in backbones:
        entry = {"spec": entry} if isinstance(entry, str) else dict(entry)
        paper = entry.pop("paper", None)
        pretrain = entry.pop("pretrain", None)
        spec = parse_backbone_spec(entry)
        BACKBONES.get(spec.family)  # unknown families fail before any dataset is read
        for task, datasets in tasks.items():
            TASKS.get(task)  # unknown task names fail here, listing the known ones
            for dataset in datasets:
                if "backbones" in dataset and spec.key not in dataset["backbones"]:
                    continue  # the dataset entry names the backbones it runs for
                path = record_path(results, spec.key, task, dataset["name"])
                _same_names(path, spec.key, dataset["name"])
                jobs.append(Job(entry, spec.key, paper, pretrain, task, dataset, path))
    return jobs


def _same_names(path: Path, backbone: str, dataset: str) -> None:
    """Refuse a job whose record file holds another backbone's or dataset's record (two names that map to one
    file name, `a b` and `a_b`): it would be skipped as done, or overwrite the other's."""
    record = read_record(path) if path.is_file() else None
    if not record:
        return
    for what, ours in (("backbone", backbone), ("dataset", dataset)):
        theirs = getattr(record, what)
        if theirs != ours:
            raise UtabenchError(f"{path} holds the record of {what} {theirs!r}, which is stored under the same file "
                                f"name as {what} {ours!r}; give {ours!r} a name that differs in letters, digits, '.', "
                                "'_' or '-', or use another results directory")


def _record(job: Job, backbone, data, out, status: str, reason: str, ctx: RunContext, wall: float,
            samples: Optional[Dict[str, Any]] = None) -> Record:
    info = asdict(backbone.info)
    kept = out.samples if out and samples else {}
    return Record(
        status=status, backbone=job.backbone_key, task=job.task, dataset=job.dataset["name"],
        dataset_type=job.dataset["type"], metrics=out.metrics if out else {}, paper=job.paper, pretrain=job.pretrain,
        reason=reason, ci=bootstrap_ci(kept, list(out.metrics)) if kept else {},
        ci_method=ci_method(kept) if kept else None,
        provenance={
            "backbone": backbone.spec.to_dict(),
            "backbone_info": info,
            "checkpoint_sha256": info["weights_sha256"],
            "random_init_seed": None if backbone.spec.checkpoint else int(backbone.spec.options.get("seed", 0)),
            "dataset": {"config": job.dataset, "root": str(data.root), "fingerprint": data.fingerprint,
                        "num_images": out.num_images if out else None,
                        "skipped_images": out.skipped_images if out else None},
            "task_details": out.details if out else {},
            **({"samples": samples} if samples else {}),  # the per-sample outcomes beside it: {file, sha256}
            # how the numbers were made: the evaluation's setup (the run's settings, or the recipe's where the task
            # evaluates with its own) and each training stage's, as the task ran them
            "evaluation": {**(out.evaluation or ctx.setup()).to_dict(), "workers": ctx.workers,
                           "decode": ctx.decode, "feature_cache": ctx.feature_cache} if out else None,
            "training": {stage: setup.to_dict() for stage, setup in out.training.items()} if out else {},
            "device": provenance.device_description(ctx.device),
            "code_version": provenance.code_version(),
            "libraries": provenance.library_versions(),
            "wall_seconds": round(wall, 3),
            "train_seconds": round(out.train_seconds, 3) if out else None,
            "model_seconds": round(out.model_seconds, 3) if out else None,
            "images_per_second": round(out.num_images / out.model_seconds, 2) if out and out.model_seconds else None,
            "host": provenance.host(),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


def summary_row(job: Job, status: str) -> Dict[str, str]:
    return {"backbone": job.backbone_key, "task": job.task, "dataset": job.dataset["name"], "status": status}


def _discard(paths) -> None:
    for path in paths:
        if Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            Path(path).unlink(missing_ok=True)


def _run_one(job: Job, backbone, data, ctx: RunContext, log: Callable[[str], None]) -> str:
    start = time.perf_counter()
    job_ctx = replace(ctx, work_dir=job.path.parent / f"{job.path.stem}.work")
    try:
        task = TASKS.get(job.task)()
        out, status, reason = task.run(backbone, data, job_ctx, task.options_of(job.dataset)), "complete", ""
    except NotApplicable as exc:
        out, status, reason = None, "not_applicable", str(exc)
    wall = time.perf_counter() - start
    if ctx.dist.is_main:
        samples = None
        kept = samples_file(job.path)
        if out and out.samples:  # before the record, which names it: a record never names a missing file
            samples = {"file": kept.name, "sha256": save_samples(kept, out.samples)}
        else:
            kept.unlink(missing_ok=True)  # a forced rerun that keeps none leaves no stale outcomes
        write_record(job.path, _record(job, backbone, data, out, status, reason, ctx, wall, samples))
        _discard(out.discard if out else [])  # only now: until the record exists, a rerun may need them
    barrier(ctx.dist)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in out.metrics.items()) if out else reason
    log(f"[{job.backbone_key}] {job.task} / {job.dataset['name']}: {shown} ({wall:.1f}s)")
    return status


def _dataset_key(task: str, dataset: Dict[str, Any]) -> tuple:
    return task, dataset["name"], str(dataset.get("root"))


def load_datasets(entries: List[tuple], loaded: Optional[Dict[tuple, Any]] = None) -> Dict[tuple, Any]:
    """Each (task, dataset entry)'s data, loaded (and so validated) once: bad input fails here, before any model is
    built. `loaded` keeps what was loaded before."""
    loaded = {} if loaded is None else loaded
    for task, dataset in entries:
        key = _dataset_key(task, dataset)
        if key not in loaded:
            loaded[key] = TASKS.get(task)().load(dataset)
    return loaded


def run_jobs(jobs: List[Job], ctx: RunContext, force: bool = False, log: Callable[[str], None] = print,
             progress: Optional[Progress] = None, loaded: Optional[Dict[tuple, Any]] = None) -> List[Dict[str, str]]:
    """Run the jobs that are not done (all with `force`); returns one summary row per job. A job that another
    process is running on the same results (its record is locked) is skipped. With `progress`, a line before
    each job gives its estimate and what the run has left. `loaded`: datasets loaded by earlier calls, kept."""
    summary = []
    pending = []
    for job in jobs:
        if not force and is_done(job.path, parse_backbone_spec(job.backbone).to_dict()):
            summary.append(summary_row(job, "skipped (done)"))
        else:
            pending.append(job)
    datasets = load_datasets([(job.task, job.dataset) for job in pending], loaded)  # all inputs up front
    for key in {_dataset_key(job.task, job.dataset) for job in pending}:
        data = datasets[key]
        if not data.fingerprint:  # an unreadable file is refused here, before a model is built (or counted)
            digest = (fingerprint(data.root, data.files, data.extra, ctx.cache_dir, ctx.skip_corrupt)
                      if ctx.dist.is_main else None)
            data.fingerprint = broadcast(ctx.dist, digest)
    by_backbone: Dict[str, List[Job]] = {}
    for job in pending:
        by_backbone.setdefault(job.backbone_key, []).append(job)
    order = [job for group in by_backbone.values() for job in group]
    for key, group in by_backbone.items():
        backbone = None
        for job in group:
            lock = RecordLock(job.path)
            held_by = lock.acquire() if ctx.dist.is_main else None
            held_by = broadcast(ctx.dist, held_by)
            if held_by is None and not force and is_done(job.path, parse_backbone_spec(job.backbone).to_dict()):
                held_by = "a run that has finished it meanwhile"
            if held_by is not None:
                lock.release()
                log(f"[{key}] {job.task} / {job.dataset['name']}: skipped, being run by {held_by}")
                summary.append(summary_row(job, f"skipped (running: {held_by})"))
                continue
            try:
                place = order.index(job)
                if progress is not None:
                    start = progress.start(f"job:{job.cell}", f"[{place + 1}/{len(order)}] {key} · {job.task} · "
                                           f"{job.dataset['name']}", [f"job:{j.cell}" for j in order[place + 1:]])
                if backbone is None:
                    backbone = build_backbone(group[0].backbone).to(ctx.device)
                data = datasets[_dataset_key(job.task, job.dataset)]
                summary.append(summary_row(job, _run_one(job, backbone, data, ctx, log)))
                if progress is not None:
                    progress.done(f"job:{job.cell}", start)
            finally:
                lock.release()
        del backbone
    return summary
