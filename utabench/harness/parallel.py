"""`run-all --parallel N`: run-all's stages, pretraining runs and jobs, on N worker processes of this machine at once.

Small models do not use many CPU threads well: on 2 cores two 1-thread trainings of the world students together process
about 1.4x the images of one 2-thread training (777 against 565 images a second). The stages form a graph: a pretraining
run waits for the pretraining runs its config names (its teacher, or the student it fine-tunes), and a backbone's jobs
wait for its pretraining. Ready stages start while the thread budget (--threads, default all of torch's) has room,
pretraining first, then the longest by the stage-time estimates: a pretraining run takes the `threads` its config fixes
(else the whole budget), a job stage the budget over N. A stage is one pretraining run, one training job (detection,
segmentation, fine-tuning, LLaVA) or one backbone's zero-shot or retrieval jobs.

Each stage runs in a spawned worker (harness/workers.py; no progress bars: the workers share one terminal) and writes
what the serial run writes (records, checkpoints, caches, each atomically, under the same record locks). Workers send
back their log lines, which this process prints when the stage ends, and their stage times, so that `stage-times.json`
has one writer. A failed stage, or a worker that dies, stops the others (what they finished is kept, and a rerun
resumes) and its error is raised here. Thread counts are a function of the command and the configs, never of what else
runs, so the same command gives the same bits.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from utabench.backbones.factory import parse_backbone_spec
from utabench.core.errors import UtabenchError
from utabench.core.progress import Progress
from utabench.harness.plugins import load_all
from utabench.harness.runner import evaluation_only, load_datasets, plan_jobs, run_jobs, summary_row
from utabench.harness.schedule import Planned, next_to_start, time_left
from utabench.harness.session import Request, Session, open_session
from utabench.harness.store import is_done
from utabench.harness.workers import WorkerPool
from utabench.pretrain.config import config_path, is_pretrain_entry
from utabench.pretrain.teacher_cache import sharing_key


@dataclass
class Stage:
    name: str  # a pretraining run's id, or a job stage's first cell
    kind: str  # "pretrain" or "jobs"
    label: str
    threads: int
    payload: Any  # pretrain: the backbone entry; jobs: the Job list
    keys: Tuple[str, ...]  # its stage-time keys
    needs: Tuple[str, ...] = ()  # pretraining ids to finish first
    named: List[Dict[str, Any]] = field(default_factory=list)  # pretrain: the backbone entries whose jobs wait for it
    later: Tuple[str, ...] = ()  # pretrain: the stage-time keys of those jobs (for the time left)
    order: int = 0  # position in the config (ties of priority keep it)
    shares: str = ""  # pretrain: its teacher-token key (`sharing_key`), when it keeps the teacher's tokens


@dataclass
class _Plan:
    stages: Dict[str, Stage] = field(default_factory=dict)
    entries: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # backbone name -> its cached, resolved entry


def auto_parallel(parallel, device_type: str, world_size: int, budget: int) -> int:
    """The worker count `--parallel` asks for: auto is one per thread (at most 4) on a CPU, 1 on CUDA or under
    torchrun."""
    if parallel == "auto":
        return 1 if device_type == "cuda" or world_size > 1 else max(1, min(4, budget))
    return int(parallel)


# ----------------------------------------------------------------------------------------------------------------
# the worker side

_WORKER: Dict[str, Any] = {}


def _init_worker(request: Request, datasets: Dict[tuple, Any]) -> None:
    """Fill the registries and open the session as run-all does, without progress bars (several workers share one
    terminal); `datasets`: what the main process loaded, so that no worker lists them again."""
    load_all()
    lines: List[str] = []
    _WORKER.update(session=open_session(request, log=lines.append), lines=lines, datasets=datasets)


def _run_stage(kind: str, payload: Any, threads: int) -> Dict[str, Any]:
    """Run one stage in this worker: returns its result (a job stage's summary rows; nothing for a pretraining run,
    whose backbone entries the main process reads from the cache), its log lines and its stage times."""
    torch.set_num_threads(threads)
    session, lines = _WORKER["session"], _WORKER["lines"]
    progress = session.progress
    lines.clear()
    progress.times.clear()
    result = None
    if kind == "pretrain":
        session.resolver.resolve_entry(copy.deepcopy(payload))
    else:
        result = run_jobs(payload, session.ctx, force=session.request.force, log=lines.append, progress=progress,
                          loaded=_WORKER["datasets"])
    return {"result": result, "lines": list(lines), "times": dict(progress.times)}


# ----------------------------------------------------------------------------------------------------------------
# the planning side


def _pretrain_id(resolver, entry: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """A pretraining entry's identity (its config file and objective) and its checked config."""
    cfg = resolver.config_for(entry, train_teacher=False)
    return f"{config_path(str(entry['pretrain'])).resolve()}:{cfg['objective']}", cfg


def _add_pretraining(plan: _Plan, resolver, entry: Dict[str, Any], budget: int, order: int,
                     backbone: Optional[str], tasks=None) -> Optional[str]:
    """Add the stage that trains `entry` (and those of the runs it names) to the plan; returns its id, or None when
    the cache has it (a named backbone's resolved entry then goes into `plan.entries`)."""
    ident, cfg = _pretrain_id(resolver, entry)
    if ident not in plan.stages:
        cached = resolver.resolve_entry(copy.deepcopy(entry), cached_only=True)
        if cached is not None:
            if backbone is not None:
                plan.entries[backbone] = cached
            return None
    needs = tuple(filter(None, (_add_pretraining(plan, resolver, cfg[key], budget, order, None)
                                for key in ("teacher", "init") if is_pretrain_entry(cfg.get(key)))))
    stage = plan.stages.get(ident)
    if stage is None:
        label = entry.get("name") or entry["pretrain"]
        stage = plan.stages[ident] = Stage(ident, "pretrain", f"[{label}] pretraining {cfg['objective']} "
                                           f"({entry['pretrain']})", int(cfg.get("threads") or budget), entry,
                                           (f"pretrain:{label}:{cfg['objective']}",), needs, order=order,
                                           shares=sharing_key(cfg))
    if backbone is not None:  # a named backbone entry: the first one's name, not a nested teacher's, labels it
        if not stage.named:
            stage.payload = entry
            stage.label = f"[{backbone}] pretraining {cfg['objective']} ({entry['pretrain']})"
            stage.keys = (f"pretrain:{backbone}:{cfg['objective']}",)
        stage.named.append(entry)
        stage.later += tuple(f"job:{backbone}/{task}/{dataset['name']}" for task, datasets in tasks.items()
                             for dataset in datasets if backbone in dataset.get("backbones", [backbone]))
    return ident


def _job_stages(entry: Dict[str, Any], tasks, results: Path, force: bool, threads: int, order: int,
                summary: List[Dict[str, str]]) -> List[Stage]:
    """The stages of a (resolved) backbone's pending jobs; its finished jobs go into the summary."""
    groups: Dict[Tuple[str, ...], List] = {}
    for job in plan_jobs([entry], tasks, results):
        if not force and is_done(job.path, parse_backbone_spec(job.backbone).to_dict()):
            summary.append(summary_row(job, "skipped (done)"))
            continue
        # cheap tasks: one stage per backbone and task; the others one per dataset
        group = (job.task,) if evaluation_only(job.task) else (job.task, job.dataset["name"])
        groups.setdefault(group, []).append(job)
    stages = []
    for group, jobs in groups.items():
        what = " · ".join(group) if len(jobs) == 1 or len(group) > 1 else f"{group[0]} ({len(jobs)} datasets)"
        stages.append(Stage(jobs[0].cell, "jobs", f"{jobs[0].backbone_key} · {what}", threads, jobs,
                            tuple(f"job:{job.cell}" for job in jobs), order=order))
    return stages


def _estimate(progress: Progress, stage: Stage) -> float:
    return sum(progress.estimate(key) or 0.0 for key in stage.keys)


def _planned(progress: Progress, stage: Stage, needs: Tuple[str, ...] = (), seconds: Optional[float] = None) -> Planned:
    return Planned(_estimate(progress, stage) if seconds is None else seconds, stage.threads, needs,
                   stage.kind == "pretrain", stage.order, stage.shares)


def _left(progress: Progress, pending: Dict[str, Stage], running: Dict[str, Stage], began: Dict[str, float],
          workers: int, budget: int, job_threads: int) -> float:
    """The run's time left: the pending stages, what the running ones have left of their estimates, and the jobs
    that wait for pretraining still to end, scheduled as the run schedules them (harness/schedule.py)."""
    now, live = time.perf_counter(), set(pending) | set(running)
    planned, active = {}, {}
    for name, stage in list(pending.items()) + list(running.items()):
        if name in running:
            active[name] = _planned(progress, stage, seconds=max(0.0, _estimate(progress, stage) - (now - began[name])))
        else:
            planned[name] = _planned(progress, stage, tuple(n for n in stage.needs if n in live))
        for key in stage.later:
            planned[f"{name} {key}"] = Planned(progress.estimate(key) or 0.0, job_threads, (name,), order=stage.order)
    return time_left(planned, active, workers, budget)


# ----------------------------------------------------------------------------------------------------------------


def run_parallel(session: Session, workers: int) -> List[Dict[str, str]]:
    """Run every pending stage of the session's config on `workers` processes within its thread budget; returns the
    summary rows of every job (as `run_jobs` does)."""
    cfg, results, resolver, progress = session.config, session.results, session.resolver, session.progress
    budget, force = session.thread_budget, session.request.force
    # bad input fails here, before anything is trained; the workers get what is loaded
    loaded = load_datasets([(task, dataset) for task, datasets in cfg.tasks.items() for dataset in datasets])
    job_threads = max(1, budget // workers)
    plan, summary = _Plan(), []
    for order, entry in enumerate(cfg.backbones):
        if is_pretrain_entry(entry):
            name = entry.get("name") or entry["pretrain"]
            _add_pretraining(plan, resolver, entry, budget, order, name, cfg.tasks)
            entry = plan.entries.get(name)
        for stage in _job_stages(entry, cfg.tasks, results, force, job_threads, order, summary) if entry else ():
            plan.stages[stage.name] = stage
    pending = dict(plan.stages)
    if not pending:  # everything is done: no workers to start
        return summary
    running: Dict[str, Stage] = {}
    began: Dict[str, float] = {}
    finished: set = set()
    pool = WorkerPool(workers, _init_worker, (session.request, loaded))
    started = 0
    try:
        while pending or running:
            while True:
                ready = {s.name: _planned(progress, s) for s in pending.values() if all(n in finished for n in s.needs)}
                name = next_to_start(ready, {n: _planned(progress, s) for n, s in running.items()}, workers, budget)
                if name is None:
                    break
                stage = pending.pop(name)
                running[stage.name], began[stage.name] = stage, time.perf_counter()
                started += 1
                left = _left(progress, pending, running, began, workers, budget, job_threads)
                progress.announce(f"[{started}] {stage.label}", _estimate(progress, stage), left)
                pool.submit(stage.name, _run_stage, stage.kind, stage.payload, stage.threads)
            name, reply = pool.next_reply()
            stage = running.pop(name)
            for line in reply["lines"]:
                progress.log(line)
            progress.record(reply["times"])
            finished.add(name)
            if stage.kind == "jobs":
                summary += reply["result"]
            for entry in stage.named:  # each backbone entry trained by it (several may name the same run)
                resolved = resolver.resolve_entry(copy.deepcopy(entry), cached_only=True)
                if resolved is None:
                    raise UtabenchError(f"pretraining {entry['pretrain']} finished but the cache lacks its output; "
                                        "rerun")
                for job_stage in _job_stages(resolved, cfg.tasks, results, force, job_threads, stage.order,
                                             summary):
                    pending[job_stage.name] = job_stage
    finally:
        pool.close()
    return summary
