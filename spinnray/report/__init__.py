"""Reports of a run (report.md, report.html, plots) and comparisons across runs and sweeps, read
from a run's files; ``python -m spinnray.report RUN_DIR ...``.  May import: ``errors``, ``machine``
(the link classes of the counters)."""

from spinnray.report.build import (build_report, compare_runs, load_raster, main, report_after_run, save_raster,
                                   sweep_callback)

__all__ = ["build_report", "compare_runs", "report_after_run", "save_raster", "load_raster", "sweep_callback", "main"]
