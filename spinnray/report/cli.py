"""``python -m spinnray.report PATH [PATH ...]``: the report of each run directory, the comparison of
each Hydra multirun directory (``--compare OUT`` compares any list of runs)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from spinnray.errors import SpinnrayError
from spinnray.report.compare import compare_runs, find_jobs
from spinnray.report.run_report import build_report

log = logging.getLogger("spinnray")

# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    """``python -m spinnray.report PATH [PATH ...]``; exit status 2 on a data error."""
    ap = argparse.ArgumentParser(prog="python -m spinnray.report", description=(
        "Write report.md, report.html and PNG plots into each run directory; for a Hydra multirun directory, "
        "write comparison.csv, comparison.md and comparison plots into it."))
    ap.add_argument("paths", nargs="+", type=Path, help="run directories and/or Hydra multirun directories")
    ap.add_argument("--metric", action="append", default=None,
                    help="column or dotted metrics.json key to plot against each swept parameter (repeatable; "
                         "default: accuracy, time per step or samples per second, bytes, peak memory per core)")
    ap.add_argument("--compare", type=Path, default=None, metavar="OUT",
                    help="also compare all given run directories, writing into OUT")
    ap.add_argument("--job-reports", action="store_true", help="also (re)build the report of every multirun job")
    ap.add_argument("--no-html", action="store_true", help="skip report.html")
    args = ap.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        runs = []
        for path in args.paths:
            if (path / "metrics.json").exists() or not path.is_dir():
                files = build_report(path, html_file=not args.no_html)
                runs.append(path)
                log.info("%s: wrote %s", path, ", ".join(sorted(files)))
            elif any(p.is_dir() and p.name.isdigit() for p in path.iterdir()):
                jobs = find_jobs(path)
                if args.job_reports:
                    for j in jobs:
                        if (j / "metrics.json").exists():
                            build_report(j, html_file=not args.no_html)
                files = compare_runs(jobs, path, args.metric)
                log.info("%s: compared %d jobs; wrote %s", path, len(jobs), ", ".join(sorted(files)))
            else:
                build_report(path)            # raises: names the missing metrics.json
        if args.compare is not None:
            files = compare_runs(runs, args.compare, args.metric)
            log.info("%s: compared %d runs; wrote %s", args.compare, len(runs), ", ".join(sorted(files)))
    except SpinnrayError as e:
        log.error("%s: %s", type(e).__name__, e)
        return 2
    return 0

