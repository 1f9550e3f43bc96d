#!/usr/bin/env python3
"""
Compare the proxy of two checkouts in one run: is the new tree within 5 %
of the base tree?

Not a test: it prints figures and their ratios.  On a shared or small
machine the absolute figures move by tens of percent (up to 2x) from one
run to the next, so a refactor cannot be judged against figures written
down yesterday; this script measures both trees in the same run, one wrk
run of each after the other, and compares them.

    /work/venv/bin/python bench/run_compare.py --base /work/baseline
        [--new DIR] [--repeat 3] [--duration 10] [--connections 50]

--base and --new are checkouts of this repository (a git worktree of an
older commit, say); --new defaults to the checkout this script is in.
Each tree's proxy runs under twistd with that tree first on PYTHONPATH, so
its twisted_proxy package is the one imported (checked before any load).

One nginx origin serves /100b and /64k.  Each tree runs two proxies, the
configs of run_reverse.py (a reverse listener, one route "/" to the
origin) and run_forward.py (a forward listener, absolute-form requests
sent by absolute.lua).  Four cases, reverse and forward x 100 B and
64 KiB, plus the origin directly for scale, each measured with
wrk -t1 -c50 -d10s --latency: one warm-up per target, then --repeat rounds
in which base and new of each case run back to back (base, new, base,
new, ...) so that background load spreads over both.  The best round of
each is reported, with the errors of all rounds; a case is within 5 % when
new req/s >= 0.95 x base req/s (best rounds) and new had no errors.

Exit status: 0 every case within 5 %, 1 one is not, 2 a step could not run,
130 on Ctrl-C.  Every process started is killed at exit, however it exits.

Standard library plus common.py; nginx (nginx-light), wrk and taskset from
the system.  Layout on a 2-core machine: wrk and the origin on core 0, the
proxies on core 1 (only one is under load at a time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    BODY_100B,
    HERE,
    MB,
    ROOT,
    BenchError,
    CpuMeter,
    Processes,
    Proxy,
    WrkResult,
    add_common_args,
    best_of,
    check_http,
    check_tools,
    children,
    fmt_ms,
    fmt_pct,
    install_signal_handlers,
    make_random,
    make_www,
    print_config,
    run_wrk,
    running_proxy,
    start_nginx,
    tails,
    warm_up,
)

LUA = os.path.join(HERE, "absolute.lua")
SIZE_64K = 64 * 1024
WITHIN = 0.95  # new req/s >= WITHIN x base req/s
IDLE_WARN = 2.0  # % of a core: more than this used by the idle proxies during a run is reported

# The config of run_reverse.py's wrk runs (no upload route).
REVERSE_CONF = """\
[proxy]
access_log = "off"
{pool}
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

# The config of run_forward.py's wrk runs (access log off).
FORWARD_CONF = """\
[proxy]
access_log = "off"
{pool}
[[listener]]
name = "bench"
kind = "forward"
endpoint = "tcp:{port}:interface=127.0.0.1"
connect_ports = [{origin}]
"""

# (label, path) of the two bodies
BODIES = [("100 B", "/100b"), ("64 KiB", "/64k")]
KINDS = ["reverse", "forward"]


# ---------------------------------------------------------------------------
# the trees


@dataclass
class Tree:
    name: str  # "base" or "new"
    root: str
    revision: str = ""
    module: str = ""  # the twisted_proxy package its proxies import
    proxies: dict[str, Proxy] = field(default_factory=dict)  # kind -> proxy


def git(root: str, *argv: str) -> str | None:
    """The output of a read-only git command in C{root}, None if it fails."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", "-C", root, *argv],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def describe(root: str) -> str:
    """The commit of C{root} and whether its code differs from it."""
    head = git(root, "rev-parse", "--short", "HEAD")
    if head is None:
        return "not a git checkout"
    changed = git(root, "status", "--porcelain", "--", "twisted_proxy", "twisted")
    if changed:
        n = len(changed.splitlines())
        return f"{head} + {n} uncommitted file{'s' if n != 1 else ''} under twisted_proxy/"
    return head


def twistd_python(twistd: str) -> str:
    """The interpreter named by twistd's #! line (else this one)."""
    try:
        with open(twistd, "rb") as f:
            first = f.readline(512)
    except OSError:
        return sys.executable
    if first.startswith(b"#!"):
        words = first[2:].decode("utf-8", "replace").split()
        if words and "python" in os.path.basename(words[0]) and os.path.exists(words[0]):
            return words[0]
    return sys.executable


def proxy_module(args: argparse.Namespace, tree: Tree, tmp: str) -> str:
    """
    Where twistd's Python, with the tree first on PYTHONPATH as
    running_proxy sets it, imports twisted_proxy (and its tap) from; fail
    unless it is the tree's own package.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = tree.root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import twisted_proxy, twisted_proxy.tap; print(twisted_proxy.__file__)"
    try:
        done = subprocess.run(
            [twistd_python(args.twistd), "-c", code],
            capture_output=True, text=True, timeout=60, cwd=tmp, env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{tree.name} tree: cannot import twisted_proxy: {e}") from None
    if done.returncode != 0:
        raise BenchError(f"{tree.name} tree {tree.root}: importing twisted_proxy failed:\n{done.stderr}")
    package = os.path.dirname(os.path.realpath(done.stdout.strip()))
    if package != os.path.join(tree.root, "twisted_proxy"):
        raise BenchError(
            f"{tree.name} tree {tree.root}: with it first on PYTHONPATH, twisted_proxy is imported "
            f"from {package}, not from the tree"
        )
    return package


def start_proxy(
    stack: ExitStack,
    procs: Processes,
    args: argparse.Namespace,
    tmp: str,
    tree: Tree,
    kind: str,
    origin: int,
) -> Proxy:
    """The tree's C{kind} proxy, checked with one GET /100b; stopped with C{stack}."""
    template = REVERSE_CONF if kind == "reverse" else FORWARD_CONF

    def make_config(port: int) -> str:
        pool = f"pool_max_idle = {args.pool_max_idle}\n" if args.pool_max_idle else ""
        return template.format(port=port, origin=origin, pool=pool)

    def check(proxy: Proxy) -> None:
        if kind == "reverse":
            request = f"GET /100b HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\nConnection: close\r\n\r\n"
            what = f"{tree.name} proxy check: GET /100b through the reverse listener on 127.0.0.1:{proxy.port}"
        else:
            request = (
                f"GET http://127.0.0.1:{origin}/100b HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{origin}\r\nConnection: close\r\n\r\n"
            )
            what = (
                f"{tree.name} proxy check: GET http://127.0.0.1:{origin}/100b through the forward "
                f"listener on 127.0.0.1:{proxy.port}"
            )
        check_http(proxy.port, request.encode(), BODY_100B, what, proxy.logs)

    label = f"{tree.name}-{kind}"
    return stack.enter_context(running_proxy(procs, args, tmp, label, make_config, check, root=tree.root))


# ---------------------------------------------------------------------------
# wrk


@dataclass
class Target:
    case: str  # "reverse 100 B", "direct 64 KiB"
    tree: str  # "base", "new", "origin"
    url: str  # what wrk connects to
    script_args: list[str] | None  # absolute.lua's origin URL (forward), else None
    pids: list[int]  # the processes that serve it (nginx: the workers)
    cpu: int | None  # the core they are pinned to
    proxy: Proxy | None = None  # checked alive after every run
    idle_pids: list[int] = field(default_factory=list)  # the proxies not under load meanwhile
    runs: list[WrkResult] = field(default_factory=list)
    idle_cpu: float = 0.0  # the most CPU (% of a core) the idle proxies used during a run

    @property
    def label(self) -> str:
        return f"{self.case}, {self.tree}"

    def wrk(self, args: argparse.Namespace, warm: bool = False) -> None:
        script = LUA if self.script_args else None
        if warm:
            warm_up(args, self.url, script, self.script_args)
        else:
            with CpuMeter(self.pids, self.cpu) as meter, CpuMeter(self.idle_pids, None) as idle:
                result = run_wrk(args, self.label, self.url, script, self.script_args)
            result.cpu = meter.use
            self.runs.append(result)
            if idle.use is not None:
                self.idle_cpu = max(self.idle_cpu, idle.use.cpu)
        if self.proxy is not None and self.proxy.proc.poll() is not None:
            raise BenchError(
                f"the {self.tree} proxy exited with status {self.proxy.proc.returncode} during "
                f"{'the warm-up of ' if warm else ''}{self.case}\n" + tails(self.proxy.logs)
            )


def measure(args: argparse.Namespace, groups: list[list[Target]]) -> None:
    """
    One warm-up per target, then --repeat rounds; in each round every group
    (a case: base then new; or the origin alone) runs back to back.
    """
    rounds = max(1, args.repeat)
    print(f"\nwarm-up: {args.warmup:g} s per target", flush=True)
    for group in groups:
        for t in group:
            t.wrk(args, warm=True)
    for n in range(rounds):
        figures = []
        for group in groups:
            for t in group:
                t.wrk(args)
            figures.append(f"{group[0].case} " + "/".join(f"{t.runs[-1].rps:.0f}" for t in group))
        print(f"round {n + 1}/{rounds}, req/s (base/new): " + ", ".join(figures), flush=True)


# ---------------------------------------------------------------------------
# report


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def strangers(procs: Processes) -> list[str]:
    """
    wrk, twistd, nginx and bench/run_*.py processes this run did not
    start: another benchmark on the machine, which would disturb the figures.
    """
    ours = {p.pid for p in procs.children}
    for pid in list(ours):
        ours.update(children(pid))
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in ours or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        words = [a.decode("utf-8", "replace") for a in argv[:2] if a]
        names = [os.path.basename(w) for w in words]
        if words and words[0].startswith("nginx:") or any(
            n in ("wrk", "twistd", "nginx") or (n.startswith("run_") and n.endswith(".py")) for n in names
        ):
            found.append(f"{entry} {' '.join(a.decode('utf-8', 'replace') for a in argv if a)[:100]}")
    return found


def warn_strangers(procs: Processes, when: str) -> None:
    found = strangers(procs)
    if found:
        print(f"WARNING: {when}, benchmark processes this run did not start are running; "
              "they disturb the figures:", flush=True)
        for line in found[:10]:
            print(f"    {line}", flush=True)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def print_table(args: argparse.Namespace, groups: list[list[Target]], direct: dict[str, WrkResult]) -> None:
    print()
    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s --latency, best of "
        f"{max(1, args.repeat)} round{'s' if args.repeat > 1 else ''} (errors: all rounds); "
        f"x direct: req/s over the origin's, same body"
    )
    header = (
        f"{'case':<16}{'tree':<8}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'MiB/s':>8}{'requests':>10}"
        f"{'non-2xx':>8}{'sock err':>9}{'x direct':>9}{'cpu%':>6}{'wait%':>6}{'steal%':>7}  rounds req/s"
    )
    print(header)
    print("-" * len(header))
    for group in groups:
        for t in group:
            r = best_of(t.runs)
            scale = direct.get(t.case.split(" ", 1)[1])
            print(
                f"{t.case if t is group[0] else '':<16}{t.tree:<8}{r.rps:>8.0f}{fmt_ms(r.p50_ms):>8}"
                f"{fmt_ms(r.p99_ms):>8}{r.transfer_bps / MB:>8.1f}{r.requests:>10}{r.non_2xx:>8}"
                f"{r.socket_errors:>9}{ratio(r.rps, scale.rps if scale else 0):>9}"
                f"{fmt_pct(r.cpu.cpu if r.cpu else None):>6}{fmt_pct(r.cpu.wait if r.cpu else None):>6}"
                f"{fmt_pct(r.cpu.steal if r.cpu else None):>7}  "
                + " ".join(f"{x.rps:.0f}" for x in t.runs)
            )
    for group in groups:
        for t in group:
            r = best_of(t.runs)
            if r.socket_errors:
                print(f"  {t.label}: socket errors {r.socket_detail}")
    print(
        "  cpu%, wait%: time the server wrk talked to (origin nginx worker for direct, else the proxy) spent"
        " running, and runnable but waiting for its core; steal%: of its core, taken by the hypervisor"
    )
    idle = max(t.idle_cpu for g in groups for t in g)
    print(f"  the proxies not under load used at most {idle:.1f} % of a core together during a measured run")
    if idle > IDLE_WARN:
        print(
            f"  WARNING: above {IDLE_WARN:g} %: idle proxies share the core of the one under load, so"
            " their background work lowers its figures"
        )
    sys.stdout.flush()


def verdicts(groups: list[list[Target]]) -> list[str]:
    """Print one verdict per case; return the cases not within 5 %."""
    print()
    print(f"new vs base, best round req/s (within 5 %: new >= {WITHIN:g} x base, and no errors through new):")
    failed = []
    width = max(len(g[0].case) for g in groups)
    for base, new in (g for g in groups if len(g) == 2):
        b, n = best_of(base.runs), best_of(new.runs)
        r = n.rps / b.rps if b.rps else 0.0
        paired = " ".join(ratio(x.rps, y.rps) for x, y in zip(new.runs, base.runs))
        line = (
            f"  {base.case:<{width}}  new/base {r:.3f} ({n.rps:.0f} / {b.rps:.0f} req/s; "
            f"p99 {fmt_ms(n.p99_ms)} / {fmt_ms(b.p99_ms)} ms; each round {paired}): "
        )
        ok = r >= WITHIN
        line += "within 5 %" if ok else f"NOT within 5 % (new {100 * (1 - r):.1f} % slower)"
        errors = n.non_2xx + n.socket_errors
        if errors:
            ok = False
            line += f"; ERRORS through new: {n.non_2xx} non-2xx, {n.socket_errors} socket errors"
        if b.non_2xx or b.socket_errors:
            line += f"; errors through base: {b.non_2xx} non-2xx, {b.socket_errors} socket errors"
        print(line)
        if not ok:
            failed.append(base.case)
    sys.stdout.flush()
    return failed


# ---------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    # add_common_args's RSS options mean nothing here: accepted, not shown.
    for action in p._actions:
        if action.dest in ("slow_mbps", "skip_rss"):
            action.help = argparse.SUPPRESS
    p.add_argument("--base", required=True, help="checkout of the repository to compare against (the before)")
    p.add_argument("--new", default=ROOT, help=f"checkout under test (the after; default {ROOT}, this one)")
    p.add_argument(
        "--pool-max-idle",
        type=int,
        default=None,
        help="set [proxy] pool_max_idle in both trees' configs (default: the shipped default)",
    )
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of base and new, interleaved; the best of each is compared, errors of all counted (3)")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    problem = check_tools(args, ("wrk",))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    trees = [Tree("base", os.path.realpath(args.base)), Tree("new", os.path.realpath(args.new))]
    for tree in trees:
        if not os.path.isfile(os.path.join(tree.root, "twisted_proxy", "tap.py")):
            print(f"error: {tree.name} tree {tree.root}: no twisted_proxy/tap.py, not a checkout of "
                  "twisted-proxy", file=sys.stderr)
            return 2
    install_signal_handlers()

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-compare-")
    procs = Processes()
    try:
        print(
            f"cpus: {os.cpu_count()}; wrk on {args.wrk_cpu}, origin nginx on {args.origin_cpu}, "
            f"proxies on {args.proxy_cpu}; load average {loadavg()}; temp dir {tmp}",
            flush=True,
        )
        warn_strangers(procs, "at the start")
        for tree in trees:
            tree.revision = describe(tree.root)
            tree.module = proxy_module(args, tree, tmp)
            print(f"{tree.name:<5}{tree.root}  ({tree.revision}; twisted_proxy from {tree.module})", flush=True)
        if trees[0].root == trees[1].root:
            print("  base and new are the same tree: the ratios show this machine's noise", flush=True)

        www = make_www(tmp)
        make_random(os.path.join(www, "64k"), SIZE_64K)
        origin = start_nginx(procs, tmp, args.origin_cpu, "origin")
        print(f"origin: nginx on 127.0.0.1:{origin.port} (/100b, /64k)", flush=True)

        with ExitStack() as stack:
            for tree in trees:
                for kind in KINDS:
                    proxy = start_proxy(stack, procs, args, tmp, tree, kind, origin.port)
                    tree.proxies[kind] = proxy
                    print(f"{tree.name} {kind} proxy on 127.0.0.1:{proxy.port} (pid {proxy.proc.pid})", flush=True)
            for kind in KINDS:
                proxy = trees[0].proxies[kind]
                print_config(f"{kind} config (ports aside, the same for both trees; {proxy.conf})", proxy.config)

            nginx_pids = children(origin.proc.pid)
            proxy_pids = [p.proc.pid for tree in trees for p in tree.proxies.values()]
            groups: list[list[Target]] = []
            for body, path in BODIES:
                url = f"http://127.0.0.1:{origin.port}{path}"
                groups.append([Target(f"direct {body}", "origin", url, None, nginx_pids, args.origin_cpu,
                                      idle_pids=proxy_pids)])
            for kind in KINDS:
                for body, path in BODIES:
                    group = []
                    for tree in trees:
                        proxy = tree.proxies[kind]
                        if kind == "reverse":
                            url, script_args = f"http://127.0.0.1:{proxy.port}{path}", None
                        else:
                            url = f"http://127.0.0.1:{proxy.port}/"
                            script_args = [f"http://127.0.0.1:{origin.port}{path}"]
                        group.append(
                            Target(f"{kind} {body}", tree.name, url, script_args, [proxy.proc.pid],
                                   args.proxy_cpu, proxy, [p for p in proxy_pids if p != proxy.proc.pid])
                        )
                    groups.append(group)

            measure(args, groups)
            warn_strangers(procs, "at the end")

        direct = {g[0].case.split(" ", 1)[1]: best_of(g[0].runs) for g in groups if len(g) == 1}
        print_table(args, groups, direct)
        failed = verdicts(groups)
        print()
        print(f"load average at the end: {loadavg()}")
        if failed:
            print("NOT within 5 %: " + ", ".join(failed))
        else:
            print("every case within 5 %")
        return 1 if failed else 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
