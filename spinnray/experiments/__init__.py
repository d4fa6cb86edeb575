"""Runs: a composed config made typed (:mod:`~spinnray.experiments.setup`), one thin module per
kind of run -- :mod:`~spinnray.experiments.forward` (no learning), :mod:`~spinnray.experiments.train`
(any rule on the cores, with :mod:`~spinnray.experiments.trainer`), :mod:`~spinnray.experiments.dense`
(the single-process BPTT baselines) -- the one epoch loop (:mod:`~spinnray.experiments.loop`),
checkpoints (:mod:`~spinnray.experiments.checkpoint`), and the dispatch from ``run.py``
(:mod:`~spinnray.experiments.runner`).  May import everything below it."""
