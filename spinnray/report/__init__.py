"""Reports of a run (report.md, report.html, plots) and comparisons across runs and sweeps, read
from a run's files; ``python -m spinnray.report RUN_DIR ...``.  ``runs`` reads a run directory,
``document`` renders Markdown/HTML, ``plots`` draws, ``run_report`` writes one run's report,
``compare`` writes a sweep's comparison.  May import: ``errors``, ``machine`` (the link classes of
the counters)."""

from spinnray.report.cli import main
from spinnray.report.compare import compare_runs, find_jobs, sweep_callback
from spinnray.report.run_report import build_report, report_after_run
from spinnray.report.runs import load_raster, load_run, load_sample, save_raster, save_sample

__all__ = ["build_report", "compare_runs", "find_jobs", "report_after_run", "save_raster", "load_raster", "load_run",
           "save_sample", "load_sample", "sweep_callback", "main"]
