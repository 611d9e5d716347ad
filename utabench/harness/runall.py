"""`run-all` in this process (and its torchrun peers): pretrain what the config asks for, run the pending jobs inline
or on `--parallel` worker processes, then print the tables, the claims' verdict and a summary. A launched job (see
`launcher.py`) runs the same function restricted to its cells."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Set

from utabench.harness.claims import check as check_claims
from utabench.harness.claims import summary as claims_summary
from utabench.harness.parallel import auto_parallel, run_parallel
from utabench.harness.report import write_report
from utabench.harness.runner import plan_jobs, run_jobs
from utabench.harness.session import Request, Session, open_session
from utabench.harness.store import load_results
from utabench.harness.tables import render


def run_inline(session: Session, backbones, cells: Optional[Set[str]] = None) -> List[Dict[str, str]]:
    """Run the session's jobs for these (resolved) backbones in this process (only `cells`, when given); one
    summary row per job."""
    jobs = plan_jobs(backbones, session.config.tasks, session.results)
    if cells is not None:
        jobs = [job for job in jobs if job.cell in cells]
    return run_jobs(jobs, session.ctx, force=session.request.force, log=session.log, progress=session.progress)


def print_tables(results: Path) -> Path:
    """The tables of a results directory on stdout and the claims' verdict line; returns the report it wrote."""
    records = load_results(results)
    print()
    print(render(records, "markdown", with_paper=False))
    report = write_report(results, results / "report.html")
    print(f"{claims_summary(check_claims(records))} (each with its figures: utabench claims --results {results})")
    return report


def run_all(request: Request, cells: Optional[Set[str]] = None, pretrain_only: bool = False) -> int:
    """Pretrain, run the pending jobs (only `cells`, when given: what a launched job runs), then print the tables."""
    session = open_session(request)
    ctx = session.ctx
    workers = auto_parallel(session.settings.parallel, session.device_type, ctx.dist.world_size,
                            session.thread_budget)
    if workers > 1 and cells is None and not pretrain_only:
        summary = run_parallel(session, workers)
    else:
        backbones = session.resolver.resolve(session.config.backbones)
        if pretrain_only:
            return 0
        summary = run_inline(session, backbones, cells)
    if ctx.dist.is_main and cells is None:
        report = print_tables(session.results)
        counts = Counter(row["status"].split(" (")[0] for row in summary)
        print(f"run-all done in {session.progress.elapsed()}: "
              + ", ".join(f"{n} {status}" for status, n in counts.items())
              + f" (of {len(summary)} jobs); records in {session.results}/; report: {report}")
    return 0
