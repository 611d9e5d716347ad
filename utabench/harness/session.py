"""A run session: what `run`, `run-all` and `pretrain` work with, built once from the config and the command line.

The command line becomes a `Request` (picklable: the worker processes of `--parallel` and the jobs a launcher submits
open their own session from it, as the command did). `open_session` reads and checks the config, merges its
settings with the flags into one `Settings` (the schema owns every default and every check), resolves them once into
the `RunContext` the tasks get (device, precision, workers), and makes the embedded world if the config has one.
Inline, parallel and launched runs all start here.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from utabench.core.context import RunContext, resolve_device, resolve_device_type, resolve_precision, resolve_workers
from utabench.core.distributed import barrier, init_distributed
from utabench.core.errors import UtabenchError
from utabench.core.io import check_writable_dir
from utabench.core.logs import library_bars_off
from utabench.core.progress import Progress
from utabench.core.schema import flag_name, validated_dict
from utabench.harness.config import RunConfig, Settings, drop_missing, load_config, substitute_world
from utabench.pretrain.resolve import PretrainedResolver
from utabench.world import ensure_world, world_root

DEFAULT_RESULTS = "utabench-results"
SETTING_FLAGS = ("device", "batch_size", "workers", "precision", "threads", "cache_dir", "decode", "parallel")


@dataclass(frozen=True)
class Request:
    """What the command line asked for: the config (None: the embedded default; `run` and `pretrain` have none), the
    settings its flags give (checked), the results directory and whether to redo finished jobs."""

    config: Optional[str] = None
    data: Optional[str] = None  # what the config's ${DATA} names (run-all --data)
    flags: Dict[str, Any] = field(default_factory=dict)
    results: Optional[str] = None
    force: bool = False
    progress: bool = True


def request_from_args(args) -> Request:
    """The request of parsed `run` / `run-all` / `pretrain` arguments; a bad setting flag is refused here."""
    given = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None}
    if getattr(args, "skip_corrupt", False):
        given["skip_corrupt"] = True
    if getattr(args, "no_feature_cache", False):
        given["feature_cache"] = False
    flags = validated_dict(Settings, given, "command line", name=flag_name)
    return Request(config=getattr(args, "config", None), data=getattr(args, "data", None), flags=flags,
                   results=getattr(args, "results", None), force=bool(getattr(args, "force", False)),
                   progress=not getattr(args, "no_progress", False) and sys.stderr.isatty())


def _local_world_size() -> int:
    """Processes on this node (torchrun and submitit's torch environment set LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def make_context(settings: Settings, progress: bool) -> RunContext:
    """The run context of checked settings: `auto` device, precision and workers resolved (once, here), torch's CPU
    threads set, the torch.distributed group joined when launched by torchrun or a launcher."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    kind = resolve_device_type(settings.device)
    info = init_distributed(kind)
    cache = settings.cache_dir or os.environ.get("UTABENCH_CACHE") or Path.home() / ".cache" / "utabench"
    if not progress:
        library_bars_off()
    return RunContext(
        device=resolve_device(settings.device, info), batch_size=settings.batch_size,
        workers=resolve_workers(settings.workers, kind, _local_world_size()),
        precision=resolve_precision(settings.precision, kind), cache_dir=Path(cache),
        skip_corrupt=settings.skip_corrupt, decode=settings.decode, feature_cache=settings.feature_cache,
        progress=progress, dist=info,
    )


def context_of(request: Request) -> RunContext:
    """The run context of a request without a config (`run`, `pretrain`)."""
    return make_context(Settings(**request.flags), request.progress)


@dataclass
class Session:
    """A run-all session: the checked config, its settings (config's, then the flags'), the run context, the
    results directory (writable), the pretrained-backbone resolver and the stage lines."""

    request: Request
    config: RunConfig
    settings: Settings
    ctx: RunContext
    results: Path
    resolver: PretrainedResolver
    progress: Progress
    log: Callable[[str], None]

    @property
    def thread_budget(self) -> int:
        """The CPU threads the run may use (--threads, else torch's)."""
        return self.settings.threads or torch.get_num_threads()

    @property
    def device_type(self) -> str:
        return self.ctx.device_type


def open_session(request: Request, overrides: Optional[Dict[str, Any]] = None,
                 log: Optional[Callable[[str], None]] = None) -> Session:
    """Everything a run-all starts with, in this process; nothing is trained yet. `overrides` replace settings of the
    config (flags still win): the launcher's own process decodes nothing and trains nothing, on its CPU. `log` is
    given in the worker processes of `--parallel`: their lines go to it, and their progress prints nothing (the main
    process announces each stage) and keeps its times to itself."""
    cfg = load_config(request.config, request.data)
    settings = Settings(**{**cfg.settings, **(overrides or {}), **request.flags})
    worker = log is not None
    ctx = make_context(settings, request.progress and not worker)
    for note in cfg.notes if ctx.dist.is_main and not worker else ():
        print(f"utabench: note: {note}", file=sys.stderr)
    results = Path(request.results or cfg.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    log = log or (print if ctx.dist.is_main else (lambda _: None))
    progress = Progress(None, lambda _: None) if worker else Progress(ctx.cache_dir if ctx.dist.is_main else None, log)
    world = world_root(ctx.cache_dir, cfg.world) if cfg.world is not None else None
    resolver = PretrainedResolver(ctx, world, log, progress=progress)
    resolver.check(cfg.backbones)  # every pretraining config is read and checked before anything is generated
    if world is not None:
        if ctx.dist.is_main and not world.is_dir():
            start = progress.start("world", f"generating the embedded world into {world}")
            ensure_world(ctx.cache_dir, cfg.world)
            progress.done("world", start)
        barrier(ctx.dist)
        ensure_world(ctx.cache_dir, cfg.world)
        substitute_world(cfg, world)
    missing = drop_missing(cfg)
    for line in missing if ctx.dist.is_main and not worker else ():
        print(f"utabench: note: {line}", file=sys.stderr)
    if not cfg.tasks:
        raise UtabenchError(f"config {cfg.source}: none of its datasets exists (each is optional); check --data")
    return Session(request, cfg, settings, ctx, results, resolver, progress, log)
