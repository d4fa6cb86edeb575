"""Learning: the rules a run can name (:mod:`spinnray.rules.registry`), one package each --
numerics, the core that learns with them and its memory model side by side -- and what they
share: one optimizer (:mod:`~spinnray.rules.optim`), the learning core with its weight stores
and learner interface (:mod:`~spinnray.rules.learning`), one cross-entropy and one table of
pseudo-derivatives (:mod:`~spinnray.rules.losses`).  Importing this package imports every rule
package once, which registers it.  May import: ``errors``, ``checks``, ``config``, ``model``,
``machine``, ``mapping``."""

import importlib
import pkgutil

from spinnray.rules.registry import Rule, register, rule, rule_names

for _mod in pkgutil.iter_modules(__path__):
    if _mod.ispkg:
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["Rule", "register", "rule", "rule_names"]
