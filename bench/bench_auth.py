"""What authenticating the router streams (issue 22) costs a run's setup.

Usage: python bench/bench_auth.py [--quick] [--repeats R] [--base REV] [--json PATH] [--markdown]

There is no switch to turn authentication off (on purpose), so "without" is
the code before it: the tree of ``--base``, exported with ``git archive`` to a
temporary directory.  The default is the tree just before authentication came
into this history: the first parent of the first first-parent commit that
brought ``ROLE_CORE`` into ``spinnray/backends/transport.py`` (the merge of
``sec-transport``; while that branch was unmerged this was its merge base with
``main``).  Nothing else differs between the two trees but the authentication
commits and what came after them on this history.

Two measurements, both alternating with / without authentication:

* ``setup``: the forward scenario's network (``network.name = random``, read
  from each tree's ``conf/network/random.yaml``, or the ``network`` section of
  its ``scenarios/forward.yaml`` in trees before the conf groups: 100 Poisson
  inputs -> 200 recurrent LIF -> 20 LIF) mapped with 4 and 16 cores per population
  (12 and 48 core actors, one router, one node), on the ``ray`` backend: the
  wall time from the ``Simulator`` constructor's start (mapping, actor start,
  every core connecting to the router) to the end of the first round (a
  one-step run).  Each sample is a child process (its own embedded Ray with 2
  CPUs, started before the clock runs) that builds 12 then 48 cores; the
  children alternate between the two trees (A B B A ...), ``--repeats`` of each.
  Ray's worker start-up dominates and is noisy on 2 CPUs: compare medians.
* ``handshake``: only the transport, with threads in this process: a
  ``RouterServer`` and 12 / 48 ``CoreLink`` connecting at once, to the end of
  one round; the two trees' ``transport.py`` side by side, alternating, 30
  repeats.  This isolates the cost of the handshake itself (one more round
  trip and two HMAC-SHA256 per connection).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = (4, 16)             # cores per population -> 12 and 48 cores


def log(msg: str) -> None:
    print(f"[bench_auth {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the child: one setup sample


def forward_network(code_dir: Path):
    """``(network, source rates)`` of the forward scenario, built by the tree in ``code_dir``
    (imported already): its network section from ``conf/network/random.yaml`` (the conf groups)
    or from ``scenarios/forward.yaml`` (before them), built by ``spinnray.model.builders`` (or,
    in trees before the registries, ``spinnray.experiments.runner``)."""
    import yaml

    from spinnray.config import from_dict

    conf = code_dir / "conf" / "network" / "random.yaml"
    if conf.exists():
        section = yaml.safe_load(conf.read_text())
    else:
        section = yaml.safe_load((code_dir / "scenarios" / "forward.yaml").read_text())["network"]
    try:
        from spinnray.model.builders import RandomNetworkConfig, build_random, source_rates
    except ImportError:
        from spinnray.experiments.runner import ForwardNetworkConfig, build_forward_network

        return build_forward_network(from_dict(ForwardNetworkConfig, section, "network"), 0)
    cfg = from_dict(RandomNetworkConfig, section, "network")
    return build_random(cfg, None, 0), source_rates(cfg)


def child(code_dir: str) -> None:
    """Build the forward scenario's backend for each size once; print the timings as JSON."""
    sys.path.insert(0, code_dir)
    import numpy as np

    import spinnray
    from spinnray.backends import ensure_ray, transport
    from spinnray.simulator import Simulator, poisson_spikes

    assert Path(spinnray.__file__).resolve().is_relative_to(Path(code_dir).resolve()), spinnray.__file__
    net, rates = forward_network(Path(code_dir))
    inputs = {name: poisson_spikes(rate, 1, 1, net[name].size, net.dt_ms, np.random.default_rng(0))
              for name, rate in rates.items()}
    ensure_ray(None, num_cpus=2)
    import ray

    ray.get([ray.remote(num_cpus=0)(lambda: 0).remote() for _ in range(2)])      # Ray warm, off the clock
    out = {"auth": hasattr(transport, "ROLE_CORE"), "code": str(Path(spinnray.__file__).parent), "points": {}}
    try:
        for cpp in SIZES:
            t0 = time.perf_counter()
            sim = Simulator(net, cores_per_population=cpp, backend="ray", timeout_s=120.0)
            t1 = time.perf_counter()
            sim.run(1, inputs)
            t2 = time.perf_counter()
            cores = sim.mapping.n_cores
            sim.close()
            out["points"][cores] = {"build_s": t1 - t0, "first_round_s": t2 - t1, "total_s": t2 - t0}
            time.sleep(1.0)         # let the killed actors' processes go before the next build
    finally:
        ray.shutdown()
    print("RESULT " + json.dumps(out))


def setup_sample(code_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_dir), RAY_DEDUP_LOGS="0")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(code_dir)], cwd=code_dir,
                          env=env, capture_output=True, text=True, timeout=900, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"child in {code_dir} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(line[len("RESULT "):])


# ------------------------------------------------------------------ handshake, with threads


def load_transport(code_dir: Path, name: str):
    """The transport of ``code_dir``: a single ``transport.py`` (before 0.2.x split it into a package,
    loaded from its file so two trees sit side by side) or, for this tree, the package itself."""
    single = code_dir / "spinnray" / "backends" / "transport.py"
    if not single.exists():
        if code_dir.resolve() != ROOT.resolve():
            sys.exit(f"bench_auth: {code_dir} has the transport package layout; only this tree's package can be "
                     "loaded in-process (give --base a tree with spinnray/backends/transport.py)")
        return importlib.import_module("spinnray.backends.transport")
    spec = importlib.util.spec_from_file_location(name, single)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def handshake_once(mod, n: int) -> float:
    """A router and ``n`` cores connecting at once, to the end of one round (s)."""
    auth = hasattr(mod, "ROLE_CORE")
    kw = {"secret": b"s" * 32} if auth else {}
    t0 = time.perf_counter()
    server = mod.RouterServer(lambda inbox: {c: [] for c in inbox}, list(range(n)), "127.0.0.1", 30.0, **kw)
    links = [None] * n

    def core(c):
        links[c] = mod.CoreLink(c, server.address, 30.0, **kw)
        links[c].exchange([b"x"], 0)

    threads = [threading.Thread(target=core, args=(c,)) for c in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    assert all(link is not None and link.round == 1 for link in links)
    for link in links:
        link.close()
    server.thread.join(5)
    server.close()
    return dt


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def default_base() -> str:
    """The tree just before authentication (module docstring): the first parent of the oldest
    first-parent commit whose change (against its first parent) adds or removes ``ROLE_CORE`` in
    the transport."""
    out = subprocess.run(["git", "-C", str(ROOT), "log", "--first-parent", "--diff-merges=first-parent", "--no-patch",
                          "-S", "ROLE_CORE", "--format=%H", "HEAD", "--", "spinnray/backends/transport.py",
                          "spinnray/backends/transport"],
                         check=True, capture_output=True, text=True).stdout.split()
    if not out:
        sys.exit("bench_auth: no commit on this history brings in ROLE_CORE; give the tree without "
                 "authentication with --base REV")
    return out[-1] + "^1"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 setup samples of each tree (a smoke run)")
    ap.add_argument("--repeats", type=int, default=5, help="setup samples of each tree (default 5)")
    ap.add_argument("--base", default=None, help="the tree without authentication (default: the first parent of "
                                                 "the commit that brought it into this history)")
    ap.add_argument("--json", metavar="PATH", help="write every number to PATH")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table for bench/RESULTS.md")
    ap.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    repeats = 2 if args.quick else args.repeats
    command = shlex.join(["python", "bench/bench_auth.py", *(sys.argv[1:] if argv is None else argv)])
    base = args.base or default_base()
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", base], check=True, capture_output=True,
                          text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "spinnray"], check=True,
                                capture_output=True, text=True).stdout.strip())
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_auth_base_") as tmp:
        base_dir = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", base], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base_dir)], input=archive, check=True)
        trees = {"with": ROOT, "without": base_dir}

        # handshake, threads
        mods = {"with": load_transport(ROOT, "transport_with"), "without": load_transport(base_dir, "transport_without")}
        assert hasattr(mods["with"], "ROLE_CORE") and not hasattr(mods["without"], "ROLE_CORE")
        hs = {v: {n: [] for n in (12, 48)} for v in trees}
        for n in (12, 48):
            for v in trees:
                handshake_once(mods[v], n)          # warm
        for i in range(30):
            for v in (("with", "without") if i % 2 == 0 else ("without", "with")):
                for n in (12, 48):
                    hs[v][n].append(handshake_once(mods[v], n))
        for n in (12, 48):
            log(f"handshake {n} cores: with {median(hs['with'][n]) * 1e3:.2f} ms, "
                f"without {median(hs['without'][n]) * 1e3:.2f} ms")

        # setup on Ray, children alternating A B B A ...
        samples = {v: [] for v in trees}
        pairs = []          # (with, without) of adjacent children: slow drift of the host's load cancels
        order = []
        for i in range(repeats):
            order += [("with", "without"), ("without", "with")][i % 2]
        for j, v in enumerate(order, 1):
            log(f"[{j}/{len(order)}] setup sample, {v} authentication")
            r = setup_sample(trees[v])
            assert r["auth"] == (v == "with"), r
            samples[v].append(r["points"])
            if j % 2 == 0:
                pairs.append((samples["with"][-1], samples["without"][-1]))
            log("   " + ", ".join(f"{c} cores {p['total_s']:.2f} s (build {p['build_s']:.2f}, first round "
                                  f"{p['first_round_s'] * 1e3:.0f} ms)" for c, p in r["points"].items()))
    results = {"handshake_ms": {v: {n: [x * 1e3 for x in xs] for n, xs in d.items()} for v, d in hs.items()},
               "setup": samples, "pairs": pairs}
    table = []
    for n in (12, 48):
        w = [s[str(n)]["total_s"] for s in samples["with"]]
        wo = [s[str(n)]["total_s"] for s in samples["without"]]
        hw, hwo = median(hs["with"][n]) * 1e3, median(hs["without"][n]) * 1e3
        table.append({"cores": n, "setup_with_s": median(w), "setup_without_s": median(wo),
                      "setup_with_range": (min(w), max(w)), "setup_without_range": (min(wo), max(wo)),
                      "setup_extra_pct": 100 * (median(w) / median(wo) - 1),
                      "paired_extra_pct": [100 * (a[str(n)]["total_s"] / b[str(n)]["total_s"] - 1) for a, b in pairs],
                      "handshake_with_ms": hw, "handshake_without_ms": hwo,
                      "handshake_extra_ms": hw - hwo, "handshake_extra_pct_of_setup": 100 * (hw - hwo) / 1e3 / median(wo)})
    meta = {"when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "python": platform.python_version(),
            "command": command, "head": head + (" (+ uncommitted changes)" if dirty else ""), "base": base,
            "repeats": repeats, "load_average_1min": {"start": round(load_start[0], 2),
                                                      "end": round(os.getloadavg()[0], 2)}}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "table": table, "results": results}, indent=2))
        log(f"wrote {args.json}")
    if args.markdown:
        print(f"`{command}` ({meta['when']}, {meta['cpus']} CPUs, Python {meta['python']}; with = {head[:10]}"
              f"{' + uncommitted' if dirty else ''}, without = {base[:10]}; {repeats} setup samples of each, "
              f"alternating; load average {meta['load_average_1min']['start']} -> {meta['load_average_1min']['end']})\n")
        print("| cores | setup with auth (s) | without (s) | extra (medians) | extra, median of pairs "
              "| handshake + 1 round, threads: with (ms) | without (ms) | extra (ms) | extra / setup |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in table:
            print(f"| {r['cores']} | {r['setup_with_s']:.2f} ({r['setup_with_range'][0]:.2f}-{r['setup_with_range'][1]:.2f}) "
                  f"| {r['setup_without_s']:.2f} ({r['setup_without_range'][0]:.2f}-{r['setup_without_range'][1]:.2f}) "
                  f"| {r['setup_extra_pct']:+.1f} % | {median(r['paired_extra_pct']):+.1f} % "
                  f"({min(r['paired_extra_pct']):+.0f} to {max(r['paired_extra_pct']):+.0f} %) "
                  f"| {r['handshake_with_ms']:.2f} | {r['handshake_without_ms']:.2f} "
                  f"| {r['handshake_extra_ms']:+.2f} | {r['handshake_extra_pct_of_setup']:+.2f} % |")
    else:
        for r in table:
            print(f"{r['cores']:>3} cores: setup {r['setup_with_s']:.2f} s with auth, {r['setup_without_s']:.2f} s "
                  f"without ({r['setup_extra_pct']:+.1f} %, pairs {median(r['paired_extra_pct']):+.1f} %); handshake {r['handshake_with_ms']:.2f} vs "
                  f"{r['handshake_without_ms']:.2f} ms ({r['handshake_extra_pct_of_setup']:+.2f} % of setup)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
