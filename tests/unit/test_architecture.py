"""The shape of the package, read from its source with ``ast`` (nothing is imported):

(a) no import cycles between modules -- module-level and function-level imports both count;
(b) no import inside a function, but for the short allow-list below, each with its reason;
(c) the layers: each package imports only packages below it, in this order (lowest first)::

        errors, checks, config, registry, _moved  <  data  <  model  <  machine  <  mapping  <  rules
        <  backends  <  simulator  <  spinnray (the package root: the public API)  <  report  <  experiments
        <  nir (NIR files of networks and of trained runs)

    (``run.py`` is above all of them.)  Imports within one package, and within the lowest layer,
    are free; the root ``spinnray/__init__.py`` re-exports the simulator's API, so nothing below
    the simulator may import it.

An import is ``import a.b``, ``from a import b`` (to the module ``a.b`` if it is one, else to ``a``),
``from . import x`` and ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name.
A package ``__init__`` that imports its own submodules by a computed name (plugin discovery:
``spinnray.data``, ``spinnray.rules``) is taken to import every direct submodule, an
over-approximation on the safe side for (a).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


from helpers import ROOT

PACKAGE = ROOT / "spinnray"

#: lowest first; a module's layer is its first component under spinnray (the root package: "spinnray")
LAYERS = (("errors", "checks", "config", "registry", "_moved"), ("data",), ("model",), ("machine",), ("mapping",), ("rules",),
          ("backends",), ("simulator",), ("spinnray",), ("report",), ("experiments",), ("nir",))
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}

#: (module, imported module or package) -> why it is imported inside a function
ALLOWED_IN_FUNCTIONS = {
    ("spinnray.experiments.checkpoint.checkpointer", "fcntl"):
        "POSIX only: the checkpoint directory lock falls back to no lock (with a warning) where it is missing",
    ("spinnray.experiments.checkpoint.convert", "pickle"):
        "the one function that may unpickle (a user's own pre-0.2 checkpoint, on request): a module-level "
        "import would put pickle in reach of everything that imports the checkpoint package",
    ("spinnray", "spinnray.simulator"):
        "the root re-exports the simulator's names on first use (module __getattr__), so that a core actor, "
        "which imports spinnray.machine.core and with it this root, does not load the simulator, mapping "
        "and backends",
    ("spinnray", "spinnray.config"): "as spinnray.simulator: MachineConfig on first use (the typed configs are the "
                                     "largest module a core actor would otherwise load)",
    ("spinnray.model.nirgraph", "nir"):
        "an optional dependency (the extra nir): imported when a NIR graph is read, written or converted, so "
        "that spinnray imports and runs without it (the error then says how to install it)",
    ("spinnray.model.nirgraph", "h5py"):
        "comes with nir (as above): read_nir sizes a file's arrays before nir reads them",
    ("spinnray.report.plots", "matplotlib"):
        "import cost only (~0.3 s), paid when a figure is drawn: matplotlib is a required dependency",
    ("spinnray.report.plots", "matplotlib.backends.backend_agg"): "as matplotlib",
    ("spinnray.report.plots", "matplotlib.figure"): "as matplotlib",
    ("spinnray.report.plots", "matplotlib.colors"): "as matplotlib",
    ("spinnray.report.plots", "matplotlib.ticker"): "as matplotlib",
    ("spinnray.report.runs", "yaml"):
        "import cost only, when a sweep's .hydra/overrides.yaml is read: PyYAML comes with hydra-core "
        "(omegaconf), a required dependency",
    ("spinnray.report.runs", "hydra.core.override_parser.overrides_parser"):
        "as yaml: Hydra's override grammar (a dict like {input:4,hidden:32} is not YAML), when overrides are read",
    ("spinnray.report.compare", "hydra.experimental.callback"):
        "import cost only (~0.1 s), when run.py builds the sweep callback: hydra-core is a required dependency",
}


@dataclass(frozen=True)
class Import:
    module: str             # the importing module
    target: str | None      # the imported module (None: a computed name)
    line: int
    function: str | None    # the enclosing function (qualified), None at module level

    def where(self) -> str:
        path = MODULES[self.module].relative_to(ROOT)
        return f"{path}:{self.line}" + (f" (in {self.function})" if self.function else "")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str):
        self.module = module
        self.package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        self.scope: list[tuple[str, bool]] = []          # (name, is a function)
        self.found: list[Import] = []

    def _add(self, target, node):
        in_function = any(is_fn for _, is_fn in self.scope)
        self.found.append(Import(self.module, target, node.lineno,
                                 ".".join(name for name, _ in self.scope) if in_function else None))

    def _nested(self, node, name, is_fn):
        self.scope.append((name, is_fn))
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node):
        self._nested(node, node.name, True)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        self._nested(node, "<lambda>", True)

    def visit_ClassDef(self, node):
        self._nested(node, node.name, False)

    def visit_Import(self, node):
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node):
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module
        for alias in node.names:
            full = f"{source}.{alias.name}"
            self._add(full if full in MODULES else source, node)

    def visit_Call(self, node):
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in ("import_module", "__import__"):
            arg = node.args[0] if node.args else None
            self._add(arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None, node)
        self.generic_visit(node)


def _imports() -> list[Import]:
    out = []
    for module, path in MODULES.items():
        v = _Imports(module)
        v.visit(ast.parse(path.read_text(), str(path)))
        out += v.found
    return out


IMPORTS = _imports()


def _internal(target: str) -> str | None:
    """The module of spinnray that importing ``target`` runs (its longest known prefix), or None."""
    if target != "spinnray" and not target.startswith("spinnray."):
        return None
    while target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def _edges() -> dict[str, dict[str, Import]]:
    """module -> {module it imports: the first such import}, inside the package."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        if imp.target is None:                  # plugin discovery: every direct submodule
            targets = [m for m in MODULES if m.rpartition(".")[0] == imp.module]
        else:
            targets = [t for t in [_internal(imp.target)] if t is not None]
        for t in targets:
            if t != imp.module:
                edges[imp.module].setdefault(t, imp)
    return edges


def _cycles(edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return sorted(out)


def _describe_cycle(comp, edges) -> str:
    lines = [" <-> ".join(comp) + ":"]
    for a in comp:
        for b, imp in edges[a].items():
            if b in comp:
                lines.append(f"    {a} imports {b} at {imp.where()}")
    return "\n".join(lines)


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


# --------------------------------------------------------------------------- the analysis itself
def test_the_analysis_sees_the_package():
    """Guards against a vacuous pass: the modules, layers and imports the rules below read."""
    assert {"spinnray", "spinnray.simulator", "spinnray.machine.core", "spinnray.rules.eprop.core",
            "spinnray.report.cli", "spinnray.experiments.runner"} <= set(MODULES)
    unknown = sorted(m for m in MODULES if layer(m) not in RANK)
    assert not unknown, f"modules of no layer (add their package to LAYERS): {unknown}"
    edges = _edges()
    assert "spinnray.backends" in edges["spinnray.simulator"]                          # module level
    assert "spinnray.data.speech" in edges["spinnray.data.keywords"]                    # from a package __init__
    assert "spinnray.data.keywords" in edges["spinnray.data"]                           # plugin discovery (computed)
    assert {"spinnray.rules.eprop", "spinnray.rules.eventprop", "spinnray.rules.bptt"} <= set(edges["spinnray.rules"])
    assert "spinnray.machine.packet" in edges["spinnray.machine.schedule"]               # from spinnray.machine import packet
    found = {(i.module, i.target) for i in IMPORTS if i.function}
    assert ("spinnray.experiments.checkpoint.checkpointer", "fcntl") in found                          # inside a class's method
    assert _cycles({"a": {"b": None}, "b": {"c": None}, "c": {"a": None}, "d": {"a": None}}) == [["a", "b", "c"]]


def test_the_allow_list_names_only_imports_that_exist():
    """An entry whose import has gone (moved to module level) is taken off the list."""
    found = {(i.module, i.target) for i in IMPORTS if i.function}
    stale = sorted(set(ALLOWED_IN_FUNCTIONS) - found)
    assert not stale, f"allowed imports inside functions that are no longer there: {stale}"


# --------------------------------------------------------------------------- (a) (b) (c)
def test_no_import_cycles():
    edges = _edges()
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(_describe_cycle(c, edges) for c in cycles)


def test_imports_inside_functions_only_where_allowed():
    bad = sorted({f"    {i.where()}: {i.target}" for i in IMPORTS
                  if i.function and (i.module, i.target) not in ALLOWED_IN_FUNCTIONS})
    assert not bad, "imports inside functions (move them to the top of the module, or allow them with a " \
                    "reason in ALLOWED_IN_FUNCTIONS):\n" + "\n".join(bad)


def test_each_layer_imports_only_layers_below_it():
    bad = []
    for a, targets in _edges().items():
        for b, imp in targets.items():
            la, lb = layer(a), layer(b)
            if RANK[lb] > RANK[la]:                   # same layer (the lowest holds four packages): free
                bad.append(f"    {imp.where()}: {a} ({la}) imports {b} ({lb})")
    assert not bad, "imports of a layer that is not below (order: " + " < ".join(
        "/".join(names) for names in LAYERS) + "):\n" + "\n".join(sorted(bad))
