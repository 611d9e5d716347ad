"""The `utabench` command line: list, run, run-all, tables, pretrain, masks.

Bad input ends with one line `utabench: error: ...` on stderr and exit code 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from utabench.core.errors import UtabenchError

DEFAULT_RESULTS = "utabench-results"


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (argparse prints the usage as well)."""

    def error(self, message: str):
        self.exit(2, f"utabench: error: {message} (see `{self.prog} --help`)\n")


def _add_run_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help=f"results directory (default: the config's, else ./{DEFAULT_RESULTS})")
    p.add_argument("--force", action="store_true", help="rerun jobs whose records are already complete")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size")
    p.add_argument("--workers", help="data-loader worker processes")
    p.add_argument("--precision", help="fp32 (default), amp_bf16 or amp_fp16")
    p.add_argument("--threads", help="torch CPU threads")
    p.add_argument("--cache-dir", help="text classifiers and the embedded world (default ~/.cache/utabench)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip unreadable images instead of stopping (they are counted in the record)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="utabench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered backbone families, tasks and dataset types")

    run = sub.add_parser("run", help="one task, one backbone, one dataset")
    run.add_argument("task")
    run.add_argument("--backbone", required=True, help="family:model, e.g. clip:ViT-B-16 or uta:B-16")
    run.add_argument("--checkpoint", help="weights file (.safetensors / state-dict .pt); random init without")
    run.add_argument("--name", help="the backbone's name in the results (default: the spec)")
    run.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="backbone option, e.g. image_size=336 (repeatable)")
    run.add_argument("--dataset", required=True, help="type:DIR, e.g. imagenet:/data/imagenet, flickr30k:/data/f30k")
    run.add_argument("--dataset-name", help="the dataset's name in the results (default: its type)")
    run.add_argument("--classes", help="class index JSON [[wnid, name], ...] for ImageNet-style sets")
    run.add_argument("--classnames", help="class names JSON for imagefolder")
    run.add_argument("--templates", help="templates file (JSON list or one per line, with {c})")
    run.add_argument("--annotations", help="annotation file for retrieval sets (default: the standard one)")
    run.add_argument("--recipe", help="detection / segmentation: an mmdet / mmseg config (a name under "
                     "utabench/configs/dense/ or a .py path; default: the paper's B or L recipe by backbone depth); "
                     "llava-bench: paper, world or a YAML path (default paper)")
    run.add_argument("--eval-only", metavar="FINETUNED", help="detection / segmentation: evaluate this fine-tuned "
                     "mmengine checkpoint instead of training; llava-bench: a stage-2 LLaVA folder")
    run.add_argument("--iters", type=int, help="detection / segmentation: training iterations at the paper's batch "
                     "(default: the recipe's)")
    run.add_argument("--llm", help="llava-bench: the LLM's local transformers directory (e.g. vicuna-7b-v1.5)")
    run.add_argument("--stage1", metavar="JSON:IMAGES", help="llava-bench: stage-1 caption data and its image folder")
    run.add_argument("--stage2", metavar="JSON:IMAGES", help="llava-bench: stage-2 instruction data and its image folder")
    run.add_argument("--projector", help="llava-bench: a trained stage-1 mm_projector.bin (ours or LLaVA's); skips stage 1")
    run.add_argument("--judge", choices=["offline", "openai"], help="llava-bench: the judge (default offline)")
    run.add_argument("--judge-model", help="llava-bench: the openai judge's model, e.g. gpt-4-0314")
    run.add_argument("--judge-base-url", help="llava-bench: the openai judge's base URL (an OpenAI-compatible API)")
    run.add_argument("--judge-key-env", default="OPENAI_API_KEY",
                     help="llava-bench: the environment variable holding the judge's API key")
    run.add_argument("--paper", help="paper row to compare with: 'METHOD MODEL [PAIRS]', e.g. 'UTA B/16@224 2B'")
    _add_run_settings(run)

    run_all = sub.add_parser("run-all", help="every (backbone, task, dataset) of a config, then the tables")
    run_all.add_argument("--config", help="YAML config (default: the embedded default)")
    _add_run_settings(run_all)

    pre = sub.add_parser("pretrain", help="pretrain a backbone: UTA, the MIM / FD / UTA+MIM baselines, or a CLIP")
    pre.add_argument("objective", choices=["uta", "mim", "fd", "uta+mim", "clip"],
                     help="uta, mim, fd, uta+mim (from a frozen teacher) or clip (image-text contrastive)")
    pre.add_argument("--config", required=True, help="pretraining YAML (see utabench/configs/pretrain/)")
    pre.add_argument("--out", required=True, help="output directory: checkpoints, log.jsonl, final.safetensors")
    pre.add_argument("--resume", help="a checkpoint to continue from (default: the latest one in --out)")
    pre.add_argument("--device", help="auto (default), cpu or cuda")
    pre.add_argument("--workers", help="data-loader worker processes (default: the config's)")
    pre.add_argument("--threads", help="torch CPU threads")
    pre.add_argument("--cache-dir", help="where a `{world}` config's embedded world and `pretrain:` teachers are kept "
                     "(default ~/.cache/utabench)")
    pre.add_argument("--world-seed", type=int, default=0, help="the embedded world a config's `{world}` paths name "
                     "(generated into the cache directory if needed)")
    pre.add_argument("--world", help="a generated world's directory for `{world}` instead")
    pre.add_argument("--no-progress", action="store_true")

    masks = sub.add_parser("masks", help="masking location probabilities (paper Fig. 3) as a PNG")
    masks.add_argument("--type", default="block-r", choices=["block", "block-r", "random"])
    masks.add_argument("--ratio", type=float, default=0.5)
    masks.add_argument("--grid", type=int, default=16, help="patches per side (224 px / patch 14 = 16)")
    masks.add_argument("--min-block", type=int, default=16)
    masks.add_argument("--samples", type=int, default=5000)
    masks.add_argument("--seed", type=int, default=0)
    masks.add_argument("--out", default="mask_probability.png")

    tables = sub.add_parser("tables", help="render Tables 1 to 6 from a results directory")
    tables.add_argument("--results", default=DEFAULT_RESULTS)
    tables.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    tables.add_argument("--table", type=int, action="append", help="1, 2, 3, 4, 5 or 6 (default: all)")
    tables.add_argument("--no-paper", action="store_true", help="leave out the published tables")
    return parser


def _device_type(device: str) -> str:
    """cuda or cpu for a --device value (auto: cuda when torch sees one)."""
    import torch

    return "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"


SETTING_FLAGS = ("device", "batch_size", "workers", "precision", "threads", "cache_dir")


def _settings(args, settings: dict) -> dict:
    """The config's settings (already checked) overridden by the command line's, which are checked here."""
    from utabench.core.schema import flag_name, validated_dict
    from utabench.harness.config import Settings

    given = {name: getattr(args, name) for name in SETTING_FLAGS if getattr(args, name, None) is not None}
    if getattr(args, "skip_corrupt", False):
        given["skip_corrupt"] = True
    return {**settings, **validated_dict(Settings, given, "command line", name=flag_name)}


def _context(args, settings: dict):
    import torch

    from utabench.core.context import RunContext, resolve_device
    from utabench.core.distributed import init_distributed

    settings = _settings(args, settings)
    if settings.get("threads"):
        torch.set_num_threads(int(settings["threads"]))
    device = settings.get("device", "auto")
    info = init_distributed(_device_type(device))
    cache = settings.get("cache_dir") or os.environ.get("UTABENCH_CACHE") or Path.home() / ".cache" / "utabench"
    return RunContext(
        device=resolve_device(device, info), batch_size=int(settings.get("batch_size", 64)),
        workers=int(settings.get("workers", 0)), precision=settings.get("precision", "fp32"), cache_dir=Path(cache),
        skip_corrupt=bool(settings.get("skip_corrupt")),
        progress=not getattr(args, "no_progress", False) and sys.stderr.isatty(), dist=info,
    )


def _parse_dataset(args) -> dict:
    """The dataset entry the `run` flags describe, checked against the task's and the dataset type's schemas."""
    from utabench.core.registry import TASKS

    if ":" not in args.dataset:
        raise UtabenchError(f"--dataset {args.dataset!r} must be type:DIR, e.g. imagenet:/data/imagenet")
    type_, root = args.dataset.split(":", 1)
    entry = {"type": type_, "root": root, "name": args.dataset_name or type_}
    for key in ("classes", "classnames", "templates", "annotations", "recipe", "eval_only", "iters", "llm",
                "projector"):
        if getattr(args, key):
            entry[key] = getattr(args, key)
    for stage in ("stage1", "stage2"):
        value = getattr(args, stage)
        if value:
            if ":" not in value:
                raise UtabenchError(f"--{stage} {value!r} must be JSON:IMAGES, e.g. blip_laion_cc_sbu_558k.json:images")
            data, images = value.rsplit(":", 1)
            entry[stage] = {"data": data, "images": images}
    if args.judge:
        entry["judge"] = {"type": args.judge}
        if args.judge == "openai":
            entry["judge"].update(model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.judge_key_env)
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

    for title, registry in (("backbone families", BACKBONES), ("tasks", TASKS), ("dataset types", DATASETS)):
        print(f"{title}:")
        for name, help_text in registry.describe():
            print(f"  {name:26s} {help_text}")
    return 0


def _run(args, backbones, tasks, results: Path, ctx) -> int:
    from utabench.harness.runner import plan_jobs, run_jobs

    jobs = plan_jobs(backbones, tasks, results)
    run_jobs(jobs, ctx, force=args.force, log=print if ctx.dist.is_main else (lambda _: None))
    return 0


def cmd_run(args) -> int:
    from utabench.core.io import check_writable_dir

    backbone, dataset = _parse_backbone(args), _parse_dataset(args)
    ctx = _context(args, {})
    results = Path(args.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    return _run(args, [backbone], {args.task: [dataset]}, results, ctx)


def cmd_run_all(args) -> int:
    from utabench.core.distributed import barrier
    from utabench.core.io import check_writable_dir
    from utabench.harness.config import load_config, substitute_world
    from utabench.harness.store import load_results
    from utabench.harness.tables import render
    from utabench.pretrain.resolve import PretrainedResolver
    from utabench.world import ensure_world, world_root

    cfg = load_config(args.config)
    ctx = _context(args, cfg.settings)
    results = Path(args.results or cfg.results or DEFAULT_RESULTS)
    check_writable_dir(results, "results directory", "pass --results DIR")
    log = print if ctx.dist.is_main else (lambda _: None)
    world = world_root(ctx.cache_dir, cfg.world) if cfg.world is not None else None
    resolver = PretrainedResolver(ctx, world, log)
    resolver.check(cfg.backbones)  # every pretraining config is read and checked before anything is generated
    if world is not None:
        if ctx.dist.is_main:
            ensure_world(ctx.cache_dir, cfg.world)
        barrier(ctx.dist)
        ensure_world(ctx.cache_dir, cfg.world)
        substitute_world(cfg, world)
    backbones = resolver.resolve(cfg.backbones)
    _run(args, backbones, cfg.tasks, results, ctx)
    if ctx.dist.is_main:
        print()
        print(render(load_results(results), "markdown", with_paper=False))
        print(f"records in {results}/; `utabench tables --results {results}` adds the published tables")
    return 0


def cmd_tables(args) -> int:
    from utabench.harness.store import load_results
    from utabench.harness.tables import render

    if not Path(args.results).is_dir():
        raise UtabenchError(f"results directory {args.results} does not exist; run `utabench run-all` first "
                            "or pass --results DIR")
    sys.stdout.write(render(load_results(args.results), args.format, tuple(args.table or (1, 2, 3, 4, 5, 6)),
                            with_paper=not args.no_paper))
    return 0


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
        cfg["workers"] = int(_settings(args, {})["workers"])
    meta = pretrain(cfg, Path(args.out), ctx.device, ctx.dist, progress=ctx.progress, resume=args.resume, log=log)
    if ctx.dist.is_main:
        entry = meta["backbone"]
        print(f"done: {entry['checkpoint']} (backbone {entry['spec']}; use it as "
              f"`--backbone {entry['spec']} --checkpoint {entry['checkpoint']}`)")
    return 0


def cmd_masks(args) -> int:
    from utabench.pretrain.masking import (
        MaskGenerator,
        MaskSpec,
        location_probability,
        write_probability_png,
    )

    if args.samples < 1 or args.grid < 2:
        raise UtabenchError("--samples must be >= 1 and --grid >= 2")
    generator = MaskGenerator((args.grid, args.grid), MaskSpec(args.type, args.ratio, min_block=args.min_block))
    prob = location_probability(generator, args.samples, args.seed)
    write_probability_png(prob, Path(args.out))
    print(f"{args.type} masks, ratio {args.ratio}, {args.grid}x{args.grid} grid, {args.samples} samples: "
          f"location probability max {prob.max():.4f}, min {prob.min():.4f}, max/min {prob.max() / prob.min():.3f}; "
          f"map written to {args.out}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "run-all": cmd_run_all, "tables": cmd_tables, "pretrain": cmd_pretrain,
            "masks": cmd_masks}


def main(argv: Optional[List[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a bad flag (one line, printed by Parser.error) or --help
        return int(exc.code or 0)
    try:
        from utabench.harness.plugins import load_all

        load_all()
        return COMMANDS[args.command](args)
    except UtabenchError as exc:
        print(f"utabench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("utabench: interrupted; finished records are kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
