"""`run-all --launcher local|slurm`: a run's pending (backbone, task, dataset) cells submitted through submitit.

First, if the config pretrains backbones that the cache lacks, one multi-GPU job trains them (teachers first, as
run-all does). Then the cells: zero-shot and retrieval cells go into one job array of 1-GPU jobs; every training cell
(detection, segmentation, fine-tuning, LLaVA) is a job of `--gpus-per-job` processes, one per GPU, joined into a
torch.distributed group from submitit's environment (what torchrun would set). Each job runs `run-all` restricted to
its cells, so records, resumable work directories and locks are those of a serial run. On preemption or timeout
submitit signals the job, calls `checkpoint()` and requeues the same call, which resumes from the last training
checkpoint and skips finished records.

`<results>/.sweep/` keeps the manifest (cell -> job id, log paths), submitit's logs and a file per failed cell naming
its error and log; `utabench status --results DIR` reads them. `--launcher local` runs the same jobs as local
processes (submitit's LocalExecutor): what the tests exercise on CPU.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from pydantic import PositiveInt

from utabench.backbones.factory import parse_backbone_spec
from utabench.core.errors import UtabenchError
from utabench.core.io import atomic_write_json
from utabench.core.registry import TASKS
from utabench.core.schema import Schema, flag_name, validate
from utabench.harness.plugins import load_all
from utabench.harness.runall import print_tables, run_all
from utabench.harness.runner import evaluation_only, plan_jobs
from utabench.harness.session import Request, open_session, request_from_args
from utabench.harness.store import RecordLock, cell_name, is_done, read_record, record_files

SWEEP = ".sweep"


class LaunchSettings(Schema):
    """The launcher's flags (`run-all --launcher ...`)."""

    partition: Optional[str] = None  # Slurm partition (default: the cluster's)
    gpus_per_job: PositiveInt = 8  # processes (one per GPU) of each training job and of the pretraining job
    array_parallelism: PositiveInt = 64  # cheap cells running at once
    timeout_min: PositiveInt = 24 * 60  # per job; a timed-out job requeues itself and resumes
    cpus_per_task: PositiveInt = 10  # loader workers of each process live here


def launch_settings(args) -> LaunchSettings:
    given = {key: getattr(args, key) for key in LaunchSettings.keys() if getattr(args, key, None) is not None}
    return validate(LaunchSettings, given, "command line", name=flag_name)


def sweep_dir(results: Path) -> Path:
    return Path(results) / SWEEP


def _failure_path(results: Path, cell: str) -> Path:
    return sweep_dir(results) / f"failed-{cell.replace('/', '__')}.json"


def _in_job_environment() -> Dict[str, object]:
    """Inside a submitit job: export RANK, WORLD_SIZE, MASTER_ADDR, ... for torch.distributed when the job has
    several processes; returns the job's id and log paths."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return {"job_id": env.job_id, "rank": env.global_rank, "stdout": str(env.paths.stdout).replace("%t", "0"),
            "stderr": str(env.paths.stderr).replace("%t", "0")}


class Stage:
    """One submitted job: `run-all` of the given cells (None: the pretraining only) with the user's flags.

    submitit calls `checkpoint` when the job is preempted or about to time out; the returned call is requeued as
    it is: training cells resume from their work directories, finished records are skipped."""

    def __init__(self, request: Request):
        self.request = request

    def __call__(self, cells: Optional[List[str]]) -> int:
        job = _in_job_environment()
        load_all()
        try:
            return run_all(self.request, cells=None if cells is None else set(cells), pretrain_only=cells is None)
        except Exception as exc:  # a preemption's SystemExit is not a failure: submitit requeues it
            if job["rank"] == 0:
                results = Path(self.request.results)
                for cell in cells or ["pretraining"]:
                    atomic_write_json(_failure_path(results, cell), {
                        "cell": cell, "job_id": job["job_id"], "error": f"{type(exc).__name__}: {exc}",
                        "log": job["stderr"], "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            raise

    def checkpoint(self, cells: Optional[List[str]]):
        import submitit

        return submitit.helpers.DelayedSubmission(Stage(self.request), cells)


def _executor(args, opts: LaunchSettings, folder: Path, gpus: int, name: str):
    import submitit
    import torch

    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=args.launcher)
    params = {"name": name, "timeout_min": opts.timeout_min, "nodes": 1, "tasks_per_node": gpus,
              "cpus_per_task": opts.cpus_per_task}
    if args.launcher == "slurm":
        params.update(gpus_per_node=gpus, slurm_signal_delay_s=120, slurm_array_parallelism=opts.array_parallelism)
        if opts.partition:
            params["slurm_partition"] = opts.partition
    else:
        params["gpus_per_node"] = min(gpus, torch.cuda.device_count())
    executor.update_parameters(**params)
    return executor


def _paths(job) -> Dict[str, str]:
    return {"job_id": str(job.job_id), "stdout": str(job.paths.stdout).replace("%t", "0"),
            "stderr": str(job.paths.stderr).replace("%t", "0")}


def _wait(jobs: Dict[str, object]) -> List[str]:
    """Wait for every job; the cells whose job failed."""
    failed = []
    for cell, job in jobs.items():
        try:
            job.result()
        except Exception:  # noqa: BLE001 - the job's own error is in its log and its failure file
            failed.append(cell)
    return failed


def launch(args) -> int:
    """Submit the run's pending cells (pretraining first), wait for them, print the tables and a summary."""
    opts = launch_settings(args)
    if args.launcher == "slurm" and not _has_slurm():
        raise UtabenchError("--launcher slurm needs Slurm's sbatch on PATH (run it on a login node of the cluster); "
                            "use --launcher local to run the same jobs on this machine")
    # this process only submits: it checks everything and makes the world, on its CPU, whatever the jobs will use
    session = open_session(request_from_args(args), {"device": "cpu", "decode": "pil"})
    cfg, results, resolver = session.config, session.results, session.resolver
    request = replace(session.request, results=str(results), progress=False)  # the jobs log to files
    folder = sweep_dir(results) / "logs"
    manifest: Dict[str, Dict[str, object]] = {}
    if any(isinstance(entry, dict) and "pretrain" in entry for entry in cfg.backbones):
        job = _executor(args, opts, folder, opts.gpus_per_job, "utabench-pretrain").submit(Stage(request), None)
        manifest["pretraining"] = {"kind": "pretraining", **_paths(job)}
        _write_manifest(results, manifest)
        print(f"pretraining: job {job.job_id} (log {manifest['pretraining']['stderr']})")
        if _wait({"pretraining": job}):
            raise UtabenchError(f"the pretraining job failed; its log: {manifest['pretraining']['stderr']}; "
                                f"`utabench status --results {results}` lists failures")
    backbones = resolver.resolve(cfg.backbones)  # all in the cache now: reads what the job trained
    jobs = [job for job in plan_jobs(backbones, cfg.tasks, results)
            if args.force or not is_done(job.path, parse_backbone_spec(job.backbone).to_dict())]
    for job in jobs:  # every dataset a cell needs is read and checked here, before anything is submitted
        TASKS.get(job.task)().load(job.dataset)
    cheap = [job.cell for job in jobs if evaluation_only(job.task)]  # one GPU, minutes: one job array
    training = [job.cell for job in jobs if not evaluation_only(job.task)]
    submitted: Dict[str, object] = {}
    if cheap:
        executor = _executor(args, opts, folder, 1, "utabench-eval")
        with executor.batch():
            for cell in cheap:
                submitted[cell] = executor.submit(Stage(request), [cell])
    executor = _executor(args, opts, folder, opts.gpus_per_job, "utabench-train")
    for cell in training:
        submitted[cell] = executor.submit(Stage(request), [cell])
    for cell, job in submitted.items():
        manifest[cell] = {"kind": "eval" if cell in cheap else "training", **_paths(job)}
        _failure_path(results, cell).unlink(missing_ok=True)
    _write_manifest(results, manifest)
    print(f"submitted {len(cheap)} evaluation cells (one array of 1-GPU jobs) and {len(training)} training cells "
          f"({opts.gpus_per_job} processes each) through {args.launcher}; `utabench status --results {results}`")
    failed = _wait(submitted)
    print(f"report: {print_tables(results)}")
    print(f"{len(submitted) - len(failed)} cells done, {len(failed)} failed"
          + (f" (logs: `utabench status --results {results}`)" if failed else ""))
    return 1 if failed else 0


def _has_slurm() -> bool:
    return shutil.which("sbatch") is not None


def _write_manifest(results: Path, manifest: Dict[str, Dict[str, object]]) -> None:
    atomic_write_json(sweep_dir(results) / "manifest.json", {"submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                             "cells": manifest})


def cell_states(results: Path) -> Dict[str, Dict[str, object]]:
    """Each cell's state: done (its record is complete), running (its record's lock names a live process), failed (its job
    wrote a failure file and there is no record), pending (submitted, not started or requeued). The pretraining
    job has no record: it is done once the cells after it were submitted."""
    results = Path(results)
    manifest_path = sweep_dir(results) / "manifest.json"
    cells = json.loads(manifest_path.read_text())["cells"] if manifest_path.is_file() else {}
    for path in record_files(results):
        cells.setdefault(cell_name(path), {})
    states = {}
    for cell, info in cells.items():
        record = results / f"{cell}.json"
        failure = _failure_path(results, cell)
        lock = RecordLock(record)
        if cell == "pretraining" and not failure.is_file():  # the cells are submitted once it has succeeded
            state = {"state": "done" if len(cells) > 1 else "running"}
        elif getattr(read_record(record), "done", False):  # a record of this format, finished
            state = {"state": "done"}
        elif lock.is_held():
            state = {"state": "running", "holder": lock.holder()}
        elif failure.is_file():
            state = {"state": "failed", **json.loads(failure.read_text())}
        else:
            state = {"state": "pending"}
        states[cell] = {**info, **state}
    return states


def print_status(results: Path) -> int:
    if not Path(results).is_dir():
        raise UtabenchError(f"results directory {results} does not exist; pass the --results of a run")
    states = cell_states(results)
    counts = {name: sum(s["state"] == name for s in states.values()) for name in ("done", "running", "failed",
                                                                               "pending")}
    print(", ".join(f"{n} {name}" for name, n in counts.items()) + f" ({len(states)} cells)")
    for cell, state in states.items():
        if state["state"] == "failed":
            print(f"failed  {cell}: {state['error']} (job {state['job_id']}, log {state['log']})")
        elif state["state"] in ("running", "pending"):
            where = f" (job {state['job_id']})" if "job_id" in state else ""
            print(f"{state['state']:8s}{cell}{where}")
    return 1 if counts["failed"] else 0
