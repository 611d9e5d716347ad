"""What each `utabench` command does, from its parsed arguments (`cli.py` parses them)."""

from __future__ import annotations

import sys
from pathlib import Path

from utabench.core.distributed import barrier
from utabench.core.errors import UtabenchError
from utabench.core.io import check_writable_dir
from utabench.core.registry import BACKBONES, DATASETS, TASKS
from utabench.core.tablespec import TABLES
from utabench.harness.claims import FAIL, check, summary
from utabench.harness.compare import render_compare
from utabench.harness.config import check_backbone_entry
from utabench.harness.flags import schema_values
from utabench.harness.launcher import launch, print_status
from utabench.harness.paper import parse_paper_option
from utabench.harness.report import write_report
from utabench.harness.runall import run_all
from utabench.harness.runner import plan_jobs, run_jobs
from utabench.harness.session import DEFAULT_RESULTS, context_of, request_from_args
from utabench.harness.store import load_results
from utabench.harness.tables import render
from utabench.pretrain.masking import MaskGenerator, MaskSpec, location_probability, write_probability_png
from utabench.pretrain.resolve import PretrainedResolver
from utabench.pretrain.run import pretrain
from utabench.world import ensure_world


def _parse_dataset(args) -> dict:
    """The dataset entry the `run` flags describe (the task's and the dataset types' flags are made from their
    schemas), checked against those schemas."""
    if ":" not in args.dataset:
        raise UtabenchError(f"--dataset {args.dataset!r} must be type:DIR, e.g. imagenet:/data/imagenet")
    type_, root = args.dataset.split(":", 1)
    entry = {"type": type_, "root": root, "name": args.dataset_name or type_, **schema_values(args)}
    return TASKS.get(args.task)().entry(entry, f"run {args.task} --dataset {args.dataset}")


def _parse_backbone(args) -> dict:
    """The backbone entry the `run` flags describe; `--option` values are checked against the family's options."""
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
    for title, registry in (("backbone families", BACKBONES), ("tasks", TASKS), ("dataset types", DATASETS),
                            ("tables", TABLES)):
        print(f"{title}:")
        for name, help_text in registry.describe():
            print(f"  {name:26s} {help_text}")
    return 0


def cmd_run(args) -> int:
    backbone, dataset = _parse_backbone(args), _parse_dataset(args)
    request = request_from_args(args)
    ctx = context_of(request)
    results = Path(request.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    jobs = plan_jobs([backbone], {args.task: [dataset]}, results)
    run_jobs(jobs, ctx, force=request.force, log=print if ctx.dist.is_main else (lambda _: None))
    return 0


def cmd_run_all(args) -> int:
    if args.launcher != "inline":
        return launch(args)
    return run_all(request_from_args(args))


def cmd_report(args) -> int:
    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first or pass "
                            "--results DIR")
    print(write_report(Path(args.results), Path(args.out or Path(args.results) / "report.html")))
    return 0


def cmd_status(args) -> int:
    return print_status(Path(args.results))


def cmd_tables(args) -> int:
    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first "
                            "or pass --results DIR")
    if args.compare:
        sys.stdout.write(render_compare(args.results, *args.compare, fmt=args.format))
        return 0
    sys.stdout.write(render(load_results(args.results), args.format, args.table, with_paper=not args.no_paper))
    return 0


def cmd_claims(args) -> int:
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
    ctx = context_of(request_from_args(args))
    log = print if ctx.dist.is_main else (lambda _: None)

    def world():
        if args.world:
            return Path(args.world)
        if ctx.dist.is_main:
            ensure_world(ctx.cache_dir, {"seed": args.world_seed})
        barrier(ctx.dist)
        return ensure_world(ctx.cache_dir, {"seed": args.world_seed})

    cfg = PretrainedResolver(ctx, None, log, world_factory=world).config_for(
        {"pretrain": args.recipe, "objective": args.objective})
    if args.workers is not None:
        cfg["workers"] = ctx.workers
    meta = pretrain(cfg, Path(args.out), ctx.device, ctx.dist, progress=ctx.progress, resume=args.resume, log=log)
    if ctx.dist.is_main:
        entry = meta["backbone"]
        print(f"done: {entry['checkpoint']} (backbone {entry['spec']}; use it as "
              f"`--backbone {entry['spec']} --checkpoint {entry['checkpoint']}`)")
    return 0


def cmd_masks(args) -> int:
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
