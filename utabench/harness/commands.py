"""What each `utabench` command does, from its parsed arguments (`cli.py` parses them)."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

from utabench.core.errors import UtabenchError

DEFAULT_RESULTS = "utabench-results"


def _device_type(device: str) -> str:
    """cuda or cpu for a --device value (auto: cuda when torch sees one)."""
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


SETTING_FLAGS = ("device", "batch_size", "workers", "precision", "threads", "cache_dir", "decode", "parallel")


def _settings(args, settings: dict) -> dict:
    """The config's settings (already checked) overridden by the command line's, which are checked here."""
    from utabench.core.schema import flag_name, validated_dict
    from utabench.harness.config import Settings

    given = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None}
    if getattr(args, "skip_corrupt", False):
        given["skip_corrupt"] = True
    if getattr(args, "no_feature_cache", False):
        given["feature_cache"] = False
    return {**settings, **validated_dict(Settings, given, "command line", name=flag_name)}


def _local_world_size() -> int:
    """Processes on this node (torchrun and submitit's torch environment set LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _context(args, settings: dict):
    import torch

    from utabench.core.context import RunContext, resolve_device, resolve_precision, resolve_workers
    from utabench.core.distributed import init_distributed
    from utabench.core.logs import library_bars_off

    settings = _settings(args, settings)
    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    device = settings.get("device", "auto")
    kind = _device_type(device)
    info = init_distributed(kind)
    cache = settings.get("cache_dir") or os.environ.get("UTABENCH_CACHE") or Path.home() / ".cache" / "utabench"
    progress = not getattr(args, "no_progress", False) and sys.stderr.isatty()
    if not progress:
        library_bars_off()
    return RunContext(
        device=resolve_device(device, info), batch_size=int(settings.get("batch_size", 64)),
        workers=resolve_workers(settings.get("workers", "auto"), kind, _local_world_size()),
        precision=resolve_precision(settings.get("precision", "auto"), kind), cache_dir=Path(cache),
        skip_corrupt=bool(settings.get("skip_corrupt")), decode=settings.get("decode", "pil"),
        feature_cache=settings.get("feature_cache", True),
        progress=progress, dist=info,
    )


def _parse_dataset(args) -> dict:
    """The dataset entry the `run` flags describe (the task's and the dataset types' flags are made from their
    schemas), checked against those schemas."""
    from utabench.core.registry import TASKS
    from utabench.harness.flags import schema_values

    if ":" not in args.dataset:
        raise UtabenchError(f"--dataset {args.dataset!r} must be type:DIR, e.g. imagenet:/data/imagenet")
    type_, root = args.dataset.split(":", 1)
    entry = {"type": type_, "root": root, "name": args.dataset_name or type_, **schema_values(args)}
    return TASKS.get(args.task)().entry(entry, f"run {args.task} --dataset {args.dataset}")


def _parse_backbone(args) -> dict:
    """The backbone entry the `run` flags describe; `--option` values are checked against the family's options."""
    from utabench.harness.config import check_backbone_entry
    from utabench.harness.paper import parse_paper_option

    entry = {"spec": args.backbone}
    if args.checkpoint:
        entry["checkpoint"] = args.checkpoint
    if args.name:
        entry["name"] = args.name
    for option in args.option:
        if "=" not in option:
            raise UtabenchError(f"--option {option!r} must be KEY=VALUE, e.g. image_size=336")
        key, value = option.split("=", 1)
        if key in entry or key in ("paper", "pretrain", "options"):
            raise UtabenchError(f"--option {key}=... is not an adapter option; use --{key} for it")
        entry[key] = value
    if args.paper:
        entry["paper"] = parse_paper_option(args.paper)
    return check_backbone_entry(entry, f"--backbone {args.backbone}")


def cmd_list(args) -> int:
    from utabench.core.registry import BACKBONES, DATASETS, TASKS
    from utabench.core.tablespec import TABLES

    for title, registry in (("backbone families", BACKBONES), ("tasks", TASKS), ("dataset types", DATASETS),
                            ("tables", TABLES)):
        print(f"{title}:")
        for name, help_text in registry.describe():
            print(f"  {name:26s} {help_text}")
    return 0


def _run(args, backbones, tasks, results: Path, ctx, cells=None, progress=None):
    """Run the jobs (only `cells`, when given); one summary row per job."""
    from utabench.harness.runner import plan_jobs, run_jobs

    jobs = plan_jobs(backbones, tasks, results)
    if cells is not None:
        jobs = [job for job in jobs if job.cell in cells]
    return run_jobs(jobs, ctx, force=args.force, log=print if ctx.dist.is_main else (lambda _: None),
                    progress=progress)


def cmd_run(args) -> int:
    from utabench.core.io import check_writable_dir

    backbone, dataset = _parse_backbone(args), _parse_dataset(args)
    ctx = _context(args, {})
    results = Path(args.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    _run(args, [backbone], {args.task: [dataset]}, results, ctx)
    return 0


def prepare_run_all(args, settings_override=None, log=None):
    """What every `run-all` starts with, in this process: the checked config, the run context, the results
    directory (writable), the embedded world if the config has one, and every pretraining config checked.
    Returns (config, context, results, resolver, progress); nothing is trained yet. `log` is given in the worker
    processes of `--parallel`: their lines go to it, and their progress prints nothing (the main process announces
    each stage) and keeps its times to itself."""
    from utabench.core.distributed import barrier
    from utabench.core.io import check_writable_dir
    from utabench.core.progress import Progress
    from utabench.harness.config import load_config, substitute_world
    from utabench.pretrain.resolve import PretrainedResolver
    from utabench.world import ensure_world, world_root

    cfg = load_config(args.config)
    ctx = _context(args, {**cfg.settings, **(settings_override or {})})
    for note in cfg.notes if ctx.dist.is_main and log is None else ():
        print(f"utabench: note: {note}", file=sys.stderr)
    results = Path(args.results or cfg.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    worker = log is not None
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
    return cfg, ctx, results, resolver, progress


def run_all(args, cells=None, pretrain_only: bool = False) -> int:
    """run-all in this process (and its torchrun peers): pretrain what the config asks for, run the pending jobs
    (only `cells`, when given: what a launched job runs), then print the tables."""
    import torch

    from utabench.harness.claims import check as check_claims
    from utabench.harness.claims import summary as claims_summary
    from utabench.harness.parallel import auto_parallel, run_parallel
    from utabench.harness.report import write_report
    from utabench.harness.store import load_results
    from utabench.harness.tables import render

    cfg, ctx, results, resolver, progress = prepare_run_all(args)
    settings = _settings(args, cfg.settings)
    budget = int(settings.get("threads") or torch.get_num_threads())
    workers = auto_parallel(settings.get("parallel", 1), _device_type(ctx.device), ctx.dist.world_size, budget)
    if workers > 1 and cells is None and not pretrain_only:
        summary = run_parallel(args, cfg, ctx, results, resolver, progress, workers, budget)
    else:
        backbones = resolver.resolve(cfg.backbones)
        if pretrain_only:
            return 0
        summary = _run(args, backbones, cfg.tasks, results, ctx, cells, progress)
    if ctx.dist.is_main and cells is None:
        records = load_results(results)
        print()
        print(render(records, "markdown", with_paper=False))
        report = write_report(results, results / "report.html")
        print(f"{claims_summary(check_claims(records))} (each with its figures: utabench claims --results {results})")
        counts = Counter(row["status"].split(" (")[0] for row in summary)
        print(f"run-all done in {progress.elapsed()}: " + ", ".join(f"{n} {status}" for status, n in counts.items())
              + f" (of {len(summary)} jobs); records in {results}/; report: {report}")
    return 0


def cmd_run_all(args) -> int:
    if args.launcher != "inline":
        from utabench.harness.launcher import launch

        return launch(args)
    return run_all(args)


def cmd_report(args) -> int:
    from utabench.harness.report import write_report

    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first or pass "
                            "--results DIR")
    print(write_report(Path(args.results), Path(args.out or Path(args.results) / "report.html")))
    return 0


def cmd_status(args) -> int:
    from utabench.harness.launcher import print_status

    return print_status(Path(args.results))


def cmd_tables(args) -> int:
    from utabench.harness.store import load_results
    from utabench.harness.tables import render

    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first "
                            "or pass --results DIR")
    sys.stdout.write(render(load_results(args.results), args.format, args.table, with_paper=not args.no_paper))
    return 0


def cmd_claims(args) -> int:
    from utabench.harness.claims import FAIL, check, summary
    from utabench.harness.store import load_results

    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first "
                            "or pass --results DIR")
    verdicts = check(load_results(args.results))
    for verdict in verdicts:
        print(verdict.line())
    print(summary(verdicts))
    return 1 if any(v.status == FAIL for v in verdicts) else 0


def cmd_pretrain(args) -> int:
    """Pretrain from a config on its own: `{world}` paths name the embedded world (generated into the cache if
    needed) and a `teacher: {pretrain: ...}` is trained into the cache first, as run-all does."""
    from utabench.core.distributed import barrier
    from utabench.pretrain.resolve import PretrainedResolver
    from utabench.pretrain.run import pretrain
    from utabench.world import ensure_world

    ctx = _context(args, {})
    log = print if ctx.dist.is_main else (lambda _: None)

    def world():
        if args.world:
            return Path(args.world)
        if ctx.dist.is_main:
            ensure_world(ctx.cache_dir, {"seed": args.world_seed})
        barrier(ctx.dist)
        return ensure_world(ctx.cache_dir, {"seed": args.world_seed})

    cfg = PretrainedResolver(ctx, None, log, world_factory=world).config_for(
        {"pretrain": args.config, "objective": args.objective})
    if args.workers is not None:
        cfg["workers"] = ctx.workers
    meta = pretrain(cfg, Path(args.out), ctx.device, ctx.dist, progress=ctx.progress, resume=args.resume, log=log)
    if ctx.dist.is_main:
        entry = meta["backbone"]
        print(f"done: {entry['checkpoint']} (backbone {entry['spec']}; use it as "
              f"`--backbone {entry['spec']} --checkpoint {entry['checkpoint']}`)")
    return 0


def cmd_masks(args) -> int:
    from utabench.pretrain.masking import MaskGenerator, MaskSpec, location_probability, write_probability_png

    if args.samples < 1 or args.grid < 2:
        raise UtabenchError("--samples must be >= 1 and --grid >= 2")
    generator = MaskGenerator((args.grid, args.grid), MaskSpec(args.type, args.ratio, min_block=args.min_block))
    prob = location_probability(generator, args.samples, args.seed)
    write_probability_png(prob, Path(args.out))
    print(f"{args.type} masks, ratio {args.ratio}, {args.grid}x{args.grid} grid, {args.samples} samples: "
          f"location probability max {prob.max():.4f}, min {prob.min():.4f}, max/min {prob.max() / prob.min():.3f}; "
          f"map written to {args.out}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "run-all": cmd_run_all, "status": cmd_status, "report": cmd_report,
            "tables": cmd_tables, "claims": cmd_claims, "pretrain": cmd_pretrain, "masks": cmd_masks}
