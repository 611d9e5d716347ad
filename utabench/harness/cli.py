"""The `utabench` command line: list, run, run-all, status, report, tables, claims, pretrain, masks.

`utabench run TASK` has the flags every run has (backbone, dataset, settings) plus those made from the task's own
options schema and its dataset types' schemas, so `utabench run detection --help` lists what detection takes.
Bad input ends with one line `utabench: error: ...` on stderr and exit code 2; nothing half-written is left.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from utabench.core.errors import UtabenchError
from utabench.core.registry import DATASETS, TASKS
from utabench.core.tablespec import TABLES
from utabench.harness.commands import COMMANDS
from utabench.harness.flags import add_schema_flags, literal_help
from utabench.harness.plugins import load_all
from utabench.harness.session import DEFAULT_RESULTS
from utabench.pretrain.masking import MASKS
from utabench.pretrain.objectives import OBJECTIVES


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (argparse prints the usage as well)."""

    def error(self, message: str):
        self.exit(2, f"utabench: error: {message} (see `{self.prog} --help`)\n")


def _add_run_settings(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", help=f"results directory (default: the config's, else ./{DEFAULT_RESULTS})")
    p.add_argument("--force", action="store_true", help="rerun jobs whose records are already complete")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--batch-size", help="evaluation batch per process (default 64); tasks that train (detection, "
                   "segmentation, fine-tuning, LLaVA) train with their recipe's batch, and their records say which")
    p.add_argument("--workers", help="data-loader worker processes; auto (default): 0 on CPU, from the CPU and GPU "
                   "counts on CUDA")
    p.add_argument("--precision", help="evaluation precision: auto (default: amp_bf16 on CUDA, fp32 on CPU), fp32, "
                   "amp_bf16 or amp_fp16; tasks that train use their recipe's (its `precision` or optimiser wrapper)")
    p.add_argument("--threads", help="torch CPU threads")
    p.add_argument("--cache-dir", help="text classifiers and the embedded world (default ~/.cache/utabench)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip unreadable images instead of stopping (they are counted in the record)")
    p.add_argument("--decode", help="pil (default): decode in the loader workers; gpu: batched nvjpeg decode and "
                   "resize on the GPU (pixels differ slightly; see bench/zeroshot_throughput.py)")
    p.add_argument("--no-feature-cache", action="store_true",
                   help="encode the images again instead of reading cached image features")
    p.add_argument("--no-progress", action="store_true")


def _add_run(sub) -> None:

    run = sub.add_parser("run", help="one task, one backbone, one dataset (`utabench run TASK --help`)")
    tasks = run.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=Parser)
    for name, help_text in TASKS.describe():
        task = TASKS.get(name)
        p = tasks.add_parser(name, help=literal_help(help_text), description=help_text)
        p.add_argument("--backbone", required=True, help="family:model, e.g. clip:ViT-B-16 or uta:B-16")
        p.add_argument("--checkpoint", help="weights: a file or an open_clip hub folder; random init without")
        p.add_argument("--name", help="the backbone's name in the results (default: the spec)")
        p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="backbone option, e.g. image_size=336 (repeatable)")
        p.add_argument("--paper", help="paper row to compare with: 'METHOD MODEL [PAIRS]', e.g. 'UTA B/16@224 2B'")
        types = ", ".join(task.dataset_types + tuple(task.dataset_aliases))
        p.add_argument("--dataset", required=True, help=f"TYPE:DIR, TYPE one of {types}")
        p.add_argument("--dataset-name", help="the dataset's name in the results (default: its type)")
        add_schema_flags(p, [DATASETS.schema(t) for t in task.dataset_types if DATASETS.schema(t)],
                         "dataset keys (of the dataset types above)")
        add_schema_flags(p, [task.options], f"{name} options")
        _add_run_settings(p)


def _add_run_all(sub) -> None:
    run_all = sub.add_parser("run-all", help="every (backbone, task, dataset) of a config, then the tables")
    run_all.add_argument("--config", help="YAML config (default: the embedded default)")
    run_all.add_argument("--data", help="the directory the config's ${DATA} names (default: the environment's DATA), "
                         "e.g. of CLIP_benchmark's wds_* sets for configs/datacomp.yaml")
    _add_run_settings(run_all)
    run_all.add_argument("--parallel", help="stages (pretraining runs, jobs) run at once as worker processes, "
                         "sharing --threads (default: the config's, else 1); auto: one per thread, at most 4, on a "
                         "CPU")
    launch = run_all.add_argument_group("launching on a cluster (submitit; see utabench/harness/launcher.py)")
    launch.add_argument("--launcher", choices=["inline", "local", "slurm"], default="inline",
                        help="inline (default): run here (under torchrun if started so); slurm: submit the pending "
                        "cells as Slurm jobs; local: the same jobs as processes on this machine")
    launch.add_argument("--partition", help="Slurm partition")
    launch.add_argument("--gpus-per-job", help="GPUs (one process each) of a training or pretraining job (default 8)")
    launch.add_argument("--array-parallelism", help="evaluation cells running at once (default 64)")
    launch.add_argument("--timeout-min", help="time limit of each job; a timed-out job requeues itself (default 1440)")
    launch.add_argument("--cpus-per-task", help="CPUs of each process, for its loader workers (default 10)")


def _add_report(sub) -> None:
    report = sub.add_parser("report", help="one self-contained HTML page: tables, charts, training curves, the "
                            "masking map and each record's provenance")
    report.add_argument("--results", default=DEFAULT_RESULTS)
    report.add_argument("--out", help="the page (default: RESULTS/report.html)")


def _add_status(sub) -> None:
    status = sub.add_parser("status", help="done / running / failed / pending cells of a results directory, with "
                            "the log of each failure")
    status.add_argument("--results", default=DEFAULT_RESULTS)


def _add_pretrain(sub) -> None:

    pre = sub.add_parser("pretrain", help="pretrain a backbone: UTA, the MIM / FD / UTA+MIM baselines, a CLIP, "
                         "or a student's contrastive fine-tuning (clip-ft)")
    pre.add_argument("objective", choices=OBJECTIVES.names(),
                     help=literal_help("; ".join(f"{name}: {text}" for name, text in OBJECTIVES.describe())))
    pre.add_argument("--config", dest="recipe", metavar="YAML", required=True,
                     help="pretraining YAML (see utabench/configs/pretrain/)")
    pre.add_argument("--out", required=True, help="output directory: checkpoints, log.jsonl, final.safetensors")
    pre.add_argument("--resume", help="a checkpoint to continue from (default: the latest one in --out)")
    pre.add_argument("--device", help="auto (default), cpu or cuda")
    pre.add_argument("--workers", help="data-loader worker processes, or auto (default: the config's)")
    pre.add_argument("--threads", help="torch CPU threads")
    pre.add_argument("--cache-dir", help="where a `{world}` config's embedded world and `pretrain:` teachers are kept "
                     "(default ~/.cache/utabench)")
    pre.add_argument("--world-seed", type=int, default=0, help="the embedded world a config's `{world}` paths name "
                     "(generated into the cache directory if needed)")
    pre.add_argument("--world", help="a generated world's directory for `{world}` instead")
    pre.add_argument("--no-progress", action="store_true")


def _add_masks(sub) -> None:

    masks = sub.add_parser("masks", help="masking location probabilities (paper Fig. 3) as a PNG")
    masks.add_argument("--type", default="block-r", choices=MASKS.names())
    masks.add_argument("--ratio", type=float, default=0.5)
    masks.add_argument("--grid", type=int, default=16, help="patches per side (224 px / patch 14 = 16)")
    masks.add_argument("--min-block", type=int, default=16)
    masks.add_argument("--samples", type=int, default=5000)
    masks.add_argument("--seed", type=int, default=0)
    masks.add_argument("--out", default="mask_probability.png")


def _add_tables(sub) -> None:

    tables = sub.add_parser("tables", help="render the paper's tables from a results directory")
    tables.add_argument("--results", default=DEFAULT_RESULTS)
    tables.add_argument("--format", choices=["markdown", "csv"], default="markdown")
    tables.add_argument("--table", type=int, action="append", help=literal_help(
        "; ".join(f"{name}: {title}" for name, title in TABLES.describe()) + " (default: all)"))
    tables.add_argument("--no-paper", action="store_true", help="leave out the published tables")
    tables.add_argument("--compare", nargs=2, metavar=("A", "B"), help="instead of the tables: B − A for every "
                        "(task, dataset) both backbones have, each metric with its paired bootstrap 95%% interval and "
                        "whether it excludes 0 (the records' per-sample outcomes; see utabench/tasks/bootstrap.py)")


def _add_claims(sub) -> None:
    claims = sub.add_parser("claims", help="check the paper's claims in miniature on a results directory: one line "
                            "each (PASS / FAIL / not run) with its figures and margin; exit 1 if any fails")
    claims.add_argument("--results", default=DEFAULT_RESULTS)


def build_parser() -> argparse.ArgumentParser:
    """The parser, with a `run` sub-command per registered task (the registries must be filled: `load_all`)."""
    parser = Parser(prog="utabench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registered backbone families, tasks, dataset types and tables")
    for add in (_add_run, _add_run_all, _add_status, _add_report, _add_pretrain, _add_masks, _add_tables, _add_claims):
        add(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    try:

        load_all()
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # a bad flag (one line, printed by Parser.error) or --help
            return int(exc.code or 0)
        return COMMANDS[args.command](args)
    except UtabenchError as exc:
        print(f"utabench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("utabench: interrupted; finished records are kept, rerun to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
