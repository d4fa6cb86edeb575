"""The size of the package's pieces, for bench/RESULTS.md: modules, the biggest ones, the longest
functions (cycles, layering and imports inside functions are checked by
tests/unit/test_architecture.py, not here).

    python bench/code_shape.py [ROOT]      # ROOT: a checkout (default: this one)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def shape(package: Path, top: int = 5) -> dict:
    sizes, functions = {}, []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        rel = str(path.relative_to(package.parent))
        sizes[rel] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    biggest = sorted(sizes.items(), key=lambda kv: -kv[1])[:top]
    return {"modules": len(sizes), "lines": sum(sizes.values()), "biggest": biggest,
            "longest_functions": sorted(functions, reverse=True)[:top]}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    s = shape(root / "spinnray")
    print(f"{s['modules']} modules, {s['lines']} lines")
    print("biggest modules: " + ", ".join(f"{p} {n}" for p, n in s["biggest"]))
    print("longest functions: " + ", ".join(f"{w} ({n} lines)" for n, w in s["longest_functions"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
