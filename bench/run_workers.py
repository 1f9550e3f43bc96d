#!/usr/bin/env python3
"""
Workers: the CPU each request costs in a worker of a tree against a single
process, and how evenly the kernel spreads connections over the workers.

Not a test: it prints figures, ratios and goals.  Run it with the project's
virtualenv so the proxy runs the working tree:

    /work/venv/bin/python bench/run_workers.py [--duration 10] [--connections 100]
        [--repeat 3] [--workers 2]

Steps (everything on 127.0.0.1, in a temporary folder removed at the end):

1. An nginx origin serving /100b (pinned with wrk to --wrk-cpu).
2. twisted-proxy, shipped defaults but the access log off and an admin
   listener, once with `workers = 1` and once with `workers = --workers`
   (not pinned: the workers take every core), each loaded by wrk -t1
   -c--connections with new connections every --reconnect requests
   (bench/reconnect.lua). Both run from the start and --repeat rounds
   alternate between them (single, tree, single, tree...).
3. The control (unless --no-control): two more single processes, loaded
   at the same time by two wrk with half the connections each, after each
   round of the tree: what two busy event loops sharing the cores cost,
   without the tree.
4. CPU accounting (/proc/PID/task/*/schedstat) of every proxy process over
   each run, and the requests each served (its /status): CPU microseconds
   per request of the single process and of each worker; the share of the
   requests (and of the connections) each worker took.

Goals (issue 12): a worker's CPU per request within 10% of the single
process's; each worker's share of the connections within +-20% of an even
share. Each round of the tree is compared with the single process's round
just before it (this machine's speed drifts within a run), and the goals
are judged on the median of the rounds.  On a 2-core machine wrk and the origin share the cores with the
workers: the throughput of the tree is not the point, the CPU per request
and the spread are.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from typing import Any, Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BenchError,
    Processes,
    add_common_args,
    check_tools,
    children,
    free_port,
    install_signal_handlers,
    make_www,
    running_proxy,
    run_wrk,
    start_nginx,
)
from common import _schedstat  # noqa: E402

GOAL_CPU = 1.10
GOAL_SPREAD = 0.20

PROXY_CONF = """\
[proxy]
access_log = "off"
workers = {workers}

[admin]
endpoint = "tcp:{admin}:interface=127.0.0.1"

[[listener]]
name = "bench"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"

  [[listener.route]]
  path = "/"
  backend = "origin"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]
"""

# wrk: a new connection every N requests, so that accepting (and so the
# kernel's spreading of connections) goes on during the whole run
RECONNECT_LUA = """
local n = 0
local every = tonumber(os.getenv("RECONNECT") or "100")
request = function()
  n = n + 1
  if n % every == 0 then
    return wrk.format(nil, nil, {["Connection"] = "close"})
  end
  return wrk.format()
end
"""


def status(admin: int) -> Dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def measure(args: argparse.Namespace, proxy: Any, admin: int, tree: bool) -> Dict[str, Any]:
    """
    One wrk run: req/s, and per serving process its requests and CPU.
    """
    pid = proxy.proc.pid
    time.sleep(1.2)  # the workers' status is at most a second old
    serving = children(pid) if tree else [pid]
    before_cpu = {p: _schedstat([p])[0] for p in serving + [pid]}
    before = status(admin)
    result = run_wrk(args, "tree" if tree else "single", f"http://127.0.0.1:{proxy.port}/100b", script=args.lua)
    time.sleep(1.2)
    after = status(admin)
    after_cpu = {p: _schedstat([p])[0] for p in serving + [pid]}
    out: Dict[str, Any] = {"req_s": result.rps, "errors": result.non_2xx + result.socket_errors}
    if tree:
        old = {w["pid"]: w["requests"] for w in before.get("workers", [])}
        per = []
        for w in after.get("workers", []):
            requests = w["requests"] - old.get(w["pid"], 0)
            cpu_ns = after_cpu.get(w["pid"], 0) - before_cpu.get(w["pid"], 0)
            per.append({"pid": w["pid"], "requests": requests, "cpu_us_per_request": cpu_ns / 1000 / max(1, requests)})
        out["workers"] = per
        out["supervisor_cpu_s"] = (after_cpu[pid] - before_cpu[pid]) / 1e9
    else:
        requests = sum(l["requests"] for l in after["listeners"]) - sum(l["requests"] for l in before["listeners"])
        out["requests"] = requests
        out["cpu_us_per_request"] = (after_cpu[pid] - before_cpu[pid]) / 1000 / max(1, requests)
    return out


def measure_pair(args: argparse.Namespace, pair: List[Any]) -> List[float]:
    """
    The control: two single processes, each loaded at the same time by its
    own wrk with half the connections (two busy event loops sharing the
    cores with wrk and the origin, as a tree's workers do, without any of
    the tree's machinery). CPU microseconds per request of each.
    """
    half = argparse.Namespace(**vars(args))
    half.connections = max(1, args.connections // 2)
    time.sleep(1.2)
    before = [(_schedstat([proxy.proc.pid])[0], status(admin)) for proxy, admin in pair]
    threads = [
        threading.Thread(
            target=run_wrk, args=(half, "pair", f"http://127.0.0.1:{proxy.port}/100b"), kwargs={"script": args.lua}
        )
        for proxy, _ in pair
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.2)
    out = []
    for (proxy, admin), (cpu, was) in zip(pair, before):
        now = status(admin)
        requests = sum(l["requests"] for l in now["listeners"]) - sum(l["requests"] for l in was["listeners"])
        out.append((_schedstat([proxy.proc.pid])[0] - cpu) / 1000 / max(1, requests))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.set_defaults(connections=100)
    p.add_argument("--repeat", type=int, default=3, help="rounds (3)")
    p.add_argument("--workers", type=int, default=2, help="workers of the tree (2)")
    p.add_argument("--reconnect", type=int, default=100, help="requests per wrk connection (100)")
    p.add_argument("--no-control", action="store_true",
                   help="skip the control (two single processes loaded side by side)")
    args = p.parse_args()
    args.proxy_cpu = None  # the workers take every core
    problem = check_tools(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    install_signal_handlers()
    tmp = tempfile.mkdtemp(prefix="twisted-proxy-bench-")
    procs = Processes()
    try:
        make_www(tmp)
        origin = start_nginx(procs, tmp, args.wrk_cpu, "origin")
        lua = os.path.join(tmp, "reconnect.lua")
        with open(lua, "w") as f:
            f.write(RECONNECT_LUA)
        os.environ["RECONNECT"] = str(args.reconnect)
        args.lua = lua
        results: Dict[str, List[Dict[str, Any]]] = {"single": [], "tree": []}
        with ExitStack() as stack:
            # both run from the start (idle when not loaded) and the rounds
            # alternate: this machine's speed drifts within a run, and a
            # ratio is only fair between neighbouring runs
            running = []
            kinds = [(1, "single"), (args.workers, "tree")]
            if not args.no_control:
                kinds += [(1, "control-a"), (1, "control-b")]
            for workers, label in kinds:
                admin = free_port()

                def config(port: int, workers: int = workers, admin: int = admin) -> str:
                    return PROXY_CONF.format(workers=workers, admin=admin, port=port, origin=origin.port)

                proxy = stack.enter_context(running_proxy(procs, args, tmp, label, config, lambda proxy: None))
                # wait until every worker reported once
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    try:
                        s = status(admin)
                    except OSError:
                        s = {}
                    if workers == 1 and s or len([w for w in s.get("workers", []) if w.get("generation")]) == workers:
                        break
                    time.sleep(0.2)
                running.append((label, proxy, admin, workers > 1))
            control: List[List[float]] = []
            for _ in range(args.repeat):
                for label, proxy, admin, tree in running[:2]:
                    results[label].append(measure(args, proxy, admin, tree))
                if not args.no_control:
                    control.append(measure_pair(args, [(proxy, admin) for _, proxy, admin, _ in running[2:]]))
        single = min(r["cpu_us_per_request"] for r in results["single"])
        print(f"\nsingle process: CPU per request, best of {args.repeat}: {single:.1f} us")
        for r in results["single"]:
            print(f"  {r['req_s']:.0f} req/s, {r['requests']} requests, {r['cpu_us_per_request']:.1f} us/request, errors {r['errors']}")
        print(f"\n{args.workers} workers (each round beside the single process's round before it):")
        ratios = []
        spreads = []
        for r, alone in zip(results["tree"], results["single"]):
            total = sum(w["requests"] for w in r["workers"]) or 1
            even = total / len(r["workers"])
            shares = [w["requests"] / even - 1 for w in r["workers"]]
            cpus = [w["cpu_us_per_request"] for w in r["workers"]]
            ratios.append(max(cpus) / alone["cpu_us_per_request"])
            spreads.append(max(abs(s) for s in shares))
            print(
                f"  {r['req_s']:.0f} req/s, errors {r['errors']}, supervisor {r['supervisor_cpu_s']:.2f} CPU s; "
                + "; ".join(
                    f"worker {w['pid']}: {w['requests']} requests ({s:+.0%} of even), {w['cpu_us_per_request']:.1f} us/request"
                    for w, s in zip(r["workers"], shares)
                )
                + f"; busiest worker / single {ratios[-1]:.2f}"
            )
        if control:
            print("\ncontrol, two single processes loaded side by side (each round beside the single process's):")
            pair_ratios = []
            for pair, alone in zip(control, results["single"]):
                pair_ratios.append(max(pair) / alone["cpu_us_per_request"])
                print(f"  {', '.join(f'{x:.1f}' for x in pair)} us/request; busiest / single {pair_ratios[-1]:.2f}")
            print(f"  median {statistics.median(pair_ratios):.2f}: what sharing the cores costs a process, without workers")
        worst_cpu = statistics.median(ratios)
        worst_spread = statistics.median(spreads)
        print(f"\nrounds: worker CPU per request / single {', '.join(f'{x:.2f}' for x in ratios)};"
              f" share off even {', '.join(f'{x:.0%}' for x in spreads)}")
        cpu_ok = worst_cpu <= GOAL_CPU
        spread_ok = worst_spread <= GOAL_SPREAD
        print(f"median of the rounds, busiest worker's CPU per request / single: {worst_cpu:.2f}"
              f" (goal <= {GOAL_CPU}): {'met' if cpu_ok else 'MISSED'}")
        print(f"median of the rounds, worst share of requests off even: {worst_spread:.0%}"
              f" (goal <= {GOAL_SPREAD:.0%}): {'met' if spread_ok else 'MISSED'}")
        return 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop_all()
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
