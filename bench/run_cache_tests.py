#!/usr/bin/env python3
"""
Mark Nottingham's HTTP cache test suite (cache-tests, https://cache-tests.fyi,
npm package http-cache-tests) against twisted-proxy's reverse listener
with a cache, and the counts.

Not a unit test: it prints how many of the suite's tests pass.  Run it with
the project's virtualenv so the proxy runs the working tree:

    /work/venv/bin/python bench/run_cache_tests.py              # with a cache
    /work/venv/bin/python bench/run_cache_tests.py --no-cache   # no [cache] table
    /work/venv/bin/python bench/run_cache_tests.py --direct     # the origin alone
    /work/venv/bin/python bench/run_cache_tests.py --suite-id freshness-max-age

Steps: install the pinned suite with npm into a cache folder if it is not
there; start the suite's origin server (node server/server.mjs, bound to
127.0.0.1 by a preloaded patch, since it listens on every address by
itself); start twistd -n proxy with a generated config (one reverse
listener, one route "/" to that origin, a cache in the temp folder unless
--no-cache); run the suite's CLI against the proxy; classify its JSON results
with the tests' metadata as cache-tests.fyi does; print the counts.

Needs node and npm (Node >= 14.8), the standard library, and twistd next to
the Python running it.  Every process it starts listens on 127.0.0.1 only
and is killed (whole process group) when it exits, however it exits.

Exit status: 0 the suite ran (whatever the counts), 2 a step could not run
(the message says which, with the tails of the logs), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    ROOT,
    BenchError,
    Processes,
    Proxy,
    children,
    free_port,
    install_signal_handlers,
    print_config,
    running_proxy,
    tails,
    toml_string,
    wait_for_port,
)

SUITE_PACKAGE = "http-cache-tests"
SUITE_VERSION = "0.4.5"
# The package's own dependencies are ranges and it ships no lock file: pin
# what it resolved to when this script was written (npm "overrides").
SUITE_OVERRIDES = {
    "node-fetch": "2.7.0",
    "whatwg-url": "5.0.0",
    "tr46": "0.0.3",
    "webidl-conversions": "3.0.1",
    "liquidjs": "9.43.0",
    "npm": "6.14.18",
}
REQUIRED_GOAL = 140  # of the 165 required tests, with the cache
CACHE_NAME = "tests"

# ---------------------------------------------------------------------------
# node helpers, written into the temp folder at each run

# Preloaded (node --require) into the suite's server, which calls
# server.listen(port) and so listens on every address: add 127.0.0.1.
PRELOAD_CJS = """\
'use strict'
const net = require('net')
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const first = args[0]
  const isPort = typeof first === 'number' || (typeof first === 'string' && /^[0-9]+$/.test(first))
  if (isPort && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1')
  }
  return listen.apply(this, args)
}
"""

# meta: the tests' metadata as JSON on stdout.
# run OUT ID...: run these tests (the CLI can only run all, or one with its
# results as text), write the results JSON to OUT; the test named by
# $CACHE_TESTS_DUMP has its exchanges printed, as the CLI's --id does.
HARNESS_MJS = """\
import { createRequire } from 'module'
import { writeFileSync } from 'fs'
import { pathToFileURL } from 'url'

const suite = process.env.CACHE_TESTS_DIR
const at = p => pathToFileURL(suite + '/' + p).href
const tests = (await import(at('tests/index.mjs'))).default
tests.push((await import(at('tests/surrogate-control.mjs'))).default)

const mode = process.argv[2]
if (mode === 'meta') {
  const out = []
  for (const s of tests) {
    for (const t of s.tests) {
      out.push({
        id: t.id,
        name: t.name,
        kind: t.kind === undefined ? null : t.kind,
        suite: s.id,
        suite_name: s.name,
        depends_on: t.depends_on || [],
        browser_only: t.browser_only === true,
        browser_skip: t.browser_skip === true
      })
    }
  }
  process.stdout.write(JSON.stringify(out))
} else if (mode === 'run') {
  const out = process.argv[3]
  const ids = new Set(process.argv.slice(4))
  const fetch = createRequire(suite + '/cli.mjs')('node-fetch')
  const { runTests, getResults } = await import(at('client/runner.mjs'))
  const selected = []
  for (const s of tests) {
    const these = s.tests.filter(t => ids.has(t.id))
    these.forEach(t => { if (t.id === process.env.CACHE_TESTS_DUMP) t.dump = true })
    if (these.length) selected.push({ name: s.name, id: s.id, description: s.description, tests: these })
  }
  await runTests(selected, fetch, false, process.env.CACHE_TESTS_BASE)
  writeFileSync(out, JSON.stringify(getResults(), null, 2))
} else {
  throw new Error(`unknown mode ${mode}`)
}
"""

PROXY_CONF = """\
# generated by bench/run_cache_tests.py
[proxy]
access_log = "access.log"

[admin]
endpoint = "tcp:{admin}:interface=127.0.0.1"
{cache_table}
[[listener]]
name = "front"
kind = "reverse"
endpoint = "tcp:{port}:interface=127.0.0.1"
{cache_key}
  [[listener.route]]
  path = "/"
  backend = "origin"

[backend.origin]
servers = [{{ url = "http://127.0.0.1:{origin}" }}]
"""

CACHE_TABLE = """
[cache.{name}]
path = {path}
max_size = {max_size}
"""


# ---------------------------------------------------------------------------
# installing the suite


def default_install_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "twisted-proxy", "cache-tests", SUITE_VERSION)


def suite_dir(install_dir: str) -> str:
    return os.path.join(install_dir, "node_modules", SUITE_PACKAGE)


def installed(install_dir: str) -> bool:
    try:
        with open(os.path.join(suite_dir(install_dir), "package.json")) as f:
            version = json.load(f).get("version")
    except (OSError, ValueError):
        return False
    return version == SUITE_VERSION and os.path.isdir(os.path.join(install_dir, "node_modules", "node-fetch"))


def install_suite(install_dir: str, npm: str) -> None:
    """npm install of the pinned suite into C{install_dir} (atomically)."""
    if installed(install_dir):
        return
    parent = os.path.dirname(install_dir)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(install_dir)}.installing-", dir=parent)
    log = os.path.join(work, "npm-install.log")
    try:
        with open(os.path.join(work, "package.json"), "w") as f:
            json.dump(
                {
                    "name": "twisted-proxy-cache-tests",
                    "private": True,
                    "description": "installed by twisted-proxy bench/run_cache_tests.py",
                    "dependencies": {SUITE_PACKAGE: SUITE_VERSION},
                    "overrides": SUITE_OVERRIDES,
                },
                f,
                indent=2,
            )
        argv = [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev", "--loglevel=warn"]
        print(f"installing {SUITE_PACKAGE}@{SUITE_VERSION} into {install_dir} ({' '.join(argv[1:])})", flush=True)
        with open(log, "wb") as out:
            try:
                rc = subprocess.run(argv, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=600).returncode
            except subprocess.TimeoutExpired:
                rc = None
        if rc != 0 or not installed(work):
            what = "timed out" if rc is None else f"exited with status {rc}"
            raise BenchError(f"npm install of {SUITE_PACKAGE}@{SUITE_VERSION} {what}\n" + tails([log]))
        shutil.rmtree(install_dir, ignore_errors=True)  # a stale or partial one
        os.rename(work, install_dir)
    finally:
        if os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------
# metadata and classification (lib/display.mjs determineTestResult)


@dataclass
class TestMeta:
    id: str
    name: str
    kind: str  # required, optional, check (the suite's "optimal" is called optional here)
    suite: str
    depends_on: list[str]
    browser_only: bool


def load_meta(node: str, tmp: str, suite: str, helper: str) -> dict[str, TestMeta]:
    log = os.path.join(tmp, "meta.stderr.log")
    with open(log, "wb") as err:
        proc = subprocess.run(
            [node, "--no-warnings", helper, "meta"],
            cwd=suite, env=node_env(suite), stdout=subprocess.PIPE, stderr=err,
            stdin=subprocess.DEVNULL, timeout=60,
        )
    if proc.returncode != 0:
        raise BenchError(f"reading the suite's test metadata failed (status {proc.returncode})\n" + tails([log]))
    meta: dict[str, TestMeta] = {}
    for t in json.loads(proc.stdout):
        kind = {None: "required", "required": "required", "optimal": "optional", "check": "check"}.get(t["kind"])
        if kind is None:
            raise BenchError(f"test {t['id']} has an unknown kind {t['kind']!r}: is the suite newer than this script?")
        meta[t["id"]] = TestMeta(t["id"], t["name"], kind, t["suite"], list(t["depends_on"]), t["browser_only"])
    return meta


# Outcomes, as cache-tests.fyi shows them:
#   pass      true (required, optional) / "yes" (check)
#   fail      an assertion failed (required: a conformance problem;
#             optional: not optimal; check: "no")
#   error     another exception (FetchError, TypeError...): the suite counts
#             it as a failure; kept apart here because it usually means the
#             connection broke
#   setup     a setup check failed (SetupError), or "retry" (the cache
#             retried a request: to be read by hand)
#   dependency  a test it depends on did not pass, so its own result is
#             not meaningful
#   untested  no result (not run)
OUTCOMES = ("pass", "fail", "error", "setup", "dependency", "untested")


def outcome(meta: dict[str, TestMeta], results: dict[str, Any], test_id: str, memo: dict[str, str]) -> str:
    if test_id in memo:
        return memo[test_id]
    memo[test_id] = "dependency"  # a cycle, should there be one, is not a pass
    result = results.get(test_id)
    test = meta.get(test_id)
    if result is None or test is None:
        value = "untested"
    elif any(outcome(meta, results, dep, memo) != "pass" for dep in test.depends_on):
        value = "dependency"
    elif result is True:
        value = "pass"
    elif isinstance(result, list) and result and result[0] == "Setup":
        value = "setup"
    elif isinstance(result, list) and result and result[0] == "Assertion":
        value = "fail"
    else:
        value = "error"
    memo[test_id] = value
    return value


def message(result: Any) -> str:
    if result is True or result is None:
        return ""
    if isinstance(result, list):
        return ": ".join(str(x) for x in result if x is not None)
    return str(result)


def summarize(meta: dict[str, TestMeta], results: dict[str, Any], selected: list[str]) -> dict[str, Any]:
    memo: dict[str, str] = {}
    counts = {kind: {o: 0 for o in OUTCOMES + ("total",)} for kind in ("required", "optional", "check")}
    per_test = {}
    for test_id in selected:
        test = meta[test_id]
        o = outcome(meta, results, test_id, memo)
        counts[test.kind][o] += 1
        counts[test.kind]["total"] += 1
        per_test[test_id] = {
            "kind": test.kind,
            "suite": test.suite,
            "name": test.name,
            "outcome": o,
            "result": results.get(test_id),
        }
    failing = []
    for i, t in per_test.items():
        if t["kind"] != "required" or t["outcome"] == "pass":
            continue
        if t["outcome"] == "dependency":
            deps = [f"{d} ({outcome(meta, results, d, memo)})" for d in meta[i].depends_on
                    if outcome(meta, results, d, memo) != "pass"]
            text = "depends on " + ", ".join(deps)
            own = "pass" if t["result"] is True else message(t["result"])
            if own:
                text += "; own result: " + own
        else:
            text = message(t["result"])
        failing.append({"id": i, "name": t["name"], "suite": t["suite"], "outcome": t["outcome"], "message": text})
    return {"counts": counts, "failing_required": failing, "tests": per_test}


# ---------------------------------------------------------------------------
# processes


def node_env(suite: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("npm_config_", "npm_package_"))}
    env["CACHE_TESTS_DIR"] = suite
    env.update(extra)
    return env


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of C{pid} and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children(p))
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    link = os.readlink(f"/proc/{p}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A" or fields[9] not in inodes:
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, raw), int(hexport, 16)))
    return found


def check_loopback_only(pid: int, what: str, logs: list[str]) -> str:
    addresses = listening_addresses(pid)
    if not addresses:
        raise BenchError(f"{what}: no listening socket found for pid {pid}\n" + tails(logs))
    bad = [a for a in addresses if a[0] not in ("127.0.0.1", "::1")]
    if bad:
        raise BenchError(f"{what} listens beyond loopback: {bad}\n" + tails(logs))
    return ", ".join(f"{a}:{p}" if ":" not in a else f"[{a}]:{p}" for a, p in addresses)


def http_get(port: int, path: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_origin(port: int, what: str, logs: list[str]) -> None:
    """GET /config/X: the suite's server answers 405 "GET request to config for X"."""
    token = f"harness-check-{uuid.uuid4().hex}"
    try:
        status, body = http_get(port, f"/config/{token}")
    except OSError as e:
        raise BenchError(f"{what}: GET /config/{token} failed: {e}\n" + tails(logs)) from None
    if status != 405 or f"request to config for {token}".encode() not in body:
        raise BenchError(
            f"{what}: GET /config/{token} answered {status} {body[:200]!r}, expected the suite "
            f"server's 405 'GET request to config for ...'\n" + tails(logs)
        )


def start_origin(procs: Processes, node: str, tmp: str, suite: str, timeout: float) -> tuple[int, subprocess.Popen[bytes], list[str]]:
    preload = os.path.join(tmp, "listen-loopback.cjs")
    with open(preload, "w") as f:
        f.write(PRELOAD_CJS)
    port = free_port()
    log = os.path.join(tmp, "origin-server.log")
    env = node_env(
        suite,
        npm_config_port=str(port),
        npm_config_protocol="http",
        npm_config_pidfile=os.path.join(tmp, "origin-server.pid"),
    )
    argv = [node, "--require", preload, "server/server.mjs"]
    with open(log, "wb") as out:
        proc = procs.start(argv, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    logs = [log]
    wait_for_port(port, proc, f"cache-tests server ({' '.join(argv)})", timeout, logs)
    where = check_loopback_only(proc.pid, "cache-tests server", logs)
    check_origin(port, "cache-tests server", logs)
    print(f"origin: cache-tests server (pid {proc.pid}) listening on {where} only", flush=True)
    return port, proc, logs


def run_suite(
    procs: Processes,
    node: str,
    tmp: str,
    suite: str,
    helper: str,
    base: str,
    ids: list[str] | None,
    timeout: float,
    logs: list[str],
    dump: str = "",
) -> tuple[dict[str, Any], str]:
    """The CLI (all tests) or the helper (C{ids}); the results and the stdout log."""
    out_log = os.path.join(tmp, "suite.stdout.log")
    err_log = os.path.join(tmp, "suite.stderr.log")
    results_file = os.path.join(tmp, "results.json")
    env = node_env(suite, npm_config_base=base, npm_config_id="", npm_package_config_id="",
                   CACHE_TESTS_BASE=base, CACHE_TESTS_DUMP=dump)
    if ids is None:
        argv = [node, "--no-warnings", "cli.mjs"]  # npm run --silent cli --base=BASE
        stdout_path = results_file
    else:
        argv = [node, "--no-warnings", helper, "run", results_file] + ids
        stdout_path = out_log
    with open(stdout_path, "wb") as out, open(err_log, "wb") as err:
        proc = procs.start(argv, cwd=suite, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise BenchError(f"the suite did not finish within {timeout:g} s (--timeout)\n" + tails([err_log] + logs)) from None
    procs.stop(proc)
    try:
        with open(results_file) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(
            f"the suite ({' '.join(argv[2:])}) exited with status {rc} and wrote no JSON results ({e})\n"
            + tails([err_log, stdout_path] + logs)
        ) from None
    if not isinstance(results, dict):
        raise BenchError(f"unexpected results in {results_file}: {type(results).__name__}")
    return results, out_log


# ---------------------------------------------------------------------------
# report


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def print_dump(test_id: str, client_log: str, server_log: str) -> None:
    """The exchanges of the one test asked for: client side, then server side."""
    for title, path in (("client side (the suite's requests and what it got)", client_log),
                        ("server side (what reached the origin and its answers)", server_log)):
        try:
            with open(path, errors="replace") as f:
                lines = [line.rstrip("\n") for line in f if not line.startswith(("SERVER WARNING: GET request to config for harness-check", "Listening on "))]
        except OSError:
            continue
        print(f"\n--- {test_id}: {title}")
        print("\n".join(lines).rstrip())


def print_report(summary: dict[str, Any], target: str, seconds: float, goal: bool) -> None:
    counts = summary["counts"]
    print()
    print(f"cache-tests {SUITE_VERSION} against {target}: {sum(c['total'] for c in counts.values())} tests in {seconds:.1f} s")
    header = f"{'kind':<10}{'passed':>8}{'failed':>8}{'error':>7}{'setup':>7}{'dep':>6}{'untested':>10}{'total':>7}"
    print(header)
    print("-" * len(header))
    for kind in ("required", "optional", "check"):
        c = counts[kind]
        label = kind if kind != "check" else "check"
        print(f"{label:<10}{c['pass']:>8}{c['fail']:>8}{c['error']:>7}{c['setup']:>7}{c['dependency']:>6}{c['untested']:>10}{c['total']:>7}")
    print("(check: passed = yes, failed = no; failed = an assertion failed, error = another exception, "
          "setup = setup failure or retry, dep = a test it depends on did not pass)")
    req = counts["required"]
    if req["total"]:
        wanted = f"  (goal with the cache: >= {REQUIRED_GOAL})" if goal else ""
        print(f"\nrequired passed: {req['pass']}/{req['total']}{wanted}")
    failing = summary["failing_required"]
    if failing:
        print(f"required tests not passed ({len(failing)}; [outcome] when not an assertion failure):")
        for t in failing:
            tag = "" if t["outcome"] == "fail" else f"[{t['outcome']}] "
            print(f"  {t['id']}  {tag}{short(t['name'], 90)}")
            if t["message"]:
                print(f"      {short(t['message'], 110)}")
    sys.stdout.flush()


def print_cache_status(admin: int) -> None:
    try:
        status, body = http_get(admin, "/status", timeout=5)
        data = json.loads(body) if status == 200 else None
    except (OSError, ValueError):
        return
    caches = data.get("caches") if isinstance(data, dict) else None
    if caches:
        print(f"\nproxy /status caches: {json.dumps(caches, sort_keys=True)}")


@contextmanager
def proxy_starting(cache: bool) -> Iterator[None]:
    """A hint when the proxy refuses the cache keys (a tree without them)."""
    try:
        yield
    except BenchError as e:
        text = str(e)
        if cache and "cache" in text.split("proxy config", 1)[0] and "unknown key" in text:
            raise BenchError(
                text + "\nhint: this tree does not know the [cache.*] table / listener cache key yet "
                "(DESIGN.md, Contract v2); --no-cache runs without them"
            ) from None
        raise


# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-cache", action="store_true",
                      help="a config without the [cache] table and the listener's cache key (the baseline)")
    mode.add_argument("--direct", action="store_true",
                      help="no proxy: the suite against its own origin server (the harness's sanity check)")
    p.add_argument("--json", metavar="OUT", help="write the summary (counts, failing required tests, every result) to OUT")
    p.add_argument("--keep", action="store_true", help="keep the temp folder: config, logs, results.json, the cache")
    p.add_argument("--proxy-root", metavar="DIR", default=ROOT,
                   help="the tree whose twisted_proxy runs (first on PYTHONPATH; default: this checkout)")
    p.add_argument("--suite-id", metavar="ID",
                   help="run only this test id, or every test of this group (suite id, e.g. cc-freshness); "
                        "the tests they depend on run too; one test id also prints its exchanges")
    p.add_argument("--max-size", default="1GiB", help="max_size of the cache (1GiB)")
    p.add_argument("--install-dir", default=default_install_dir(),
                   help=f"where the suite is npm-installed (default {default_install_dir()})")
    p.add_argument("--twistd", default=os.path.join(os.path.dirname(sys.executable), "twistd"),
                   help="twistd to run the proxy with (the one next to this python)")
    p.add_argument("--start-timeout", type=float, default=20, help="seconds to wait for the server and the proxy (20)")
    p.add_argument("--timeout", type=float, default=900, help="seconds the suite may run (900)")
    args = p.parse_args(argv)
    args.proxy_cpu = None  # running_proxy pins to it; nothing to pin here
    args.proxy_root = os.path.abspath(args.proxy_root)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        print("error: node and npm must be on PATH (Debian: apt-get install nodejs npm)", file=sys.stderr)
        return 2
    if not args.direct:
        if not os.path.exists(args.twistd):
            print(f"error: twistd not found at {args.twistd} (use --twistd, or run with /work/venv/bin/python)", file=sys.stderr)
            return 2
        if not os.path.isdir(os.path.join(args.proxy_root, "twisted_proxy")):
            print(f"error: no twisted_proxy package in --proxy-root {args.proxy_root}", file=sys.stderr)
            return 2
    install_signal_handlers()

    tmp = tempfile.mkdtemp(prefix="twisted-proxy-cache-tests-")
    procs = Processes()
    logs: list[str] = []
    try:
        install_suite(args.install_dir, npm)
        suite = suite_dir(args.install_dir)
        helper = os.path.join(tmp, "harness.mjs")
        with open(helper, "w") as f:
            f.write(HARNESS_MJS)
        meta = load_meta(node, tmp, suite, helper)
        runnable = [i for i, t in meta.items() if not t.browser_only]  # as the CLI runs them

        ids: list[str] | None = None
        selected = runnable
        if args.suite_id:
            selected = [i for i in runnable if i == args.suite_id or meta[i].suite == args.suite_id]
            if not selected:
                groups = sorted({t.suite for t in meta.values()})
                raise BenchError(f"--suite-id {args.suite_id}: no such test id or group; groups: {', '.join(groups)}")
            needed, todo = set(), list(selected)
            while todo:
                i = todo.pop()
                if i not in needed:
                    needed.add(i)
                    todo.extend(d for d in meta[i].depends_on if d in meta)
            ids = [i for i in runnable if i in needed]
        dump = selected[0] if args.suite_id and selected == [args.suite_id] else ""
        print(
            f"{SUITE_PACKAGE} {SUITE_VERSION} in {suite}: {len(runnable)} tests the CLI runs "
            f"({sum(meta[i].kind == 'required' for i in runnable)} required); "
            f"{'running ' + str(len(ids)) + ' (' + args.suite_id + ' and what it depends on)' if ids else 'running all'}; "
            f"temp folder {tmp}",
            flush=True,
        )

        origin_port, origin_proc, origin_logs = start_origin(procs, node, tmp, suite, args.start_timeout)
        logs += origin_logs
        started = time.monotonic()
        if args.direct:
            target = f"the cache-tests server directly (http://127.0.0.1:{origin_port}, no proxy)"
            results, out_log = run_suite(procs, node, tmp, suite, helper, f"http://127.0.0.1:{origin_port}", ids,
                                        args.timeout, logs, dump)
            admin = None
        else:
            admin = free_port()
            cache = not args.no_cache

            def make_config(port: int) -> str:
                return PROXY_CONF.format(
                    port=port,
                    admin=admin,
                    origin=origin_port,
                    cache_table=CACHE_TABLE.format(
                        name=CACHE_NAME, path=toml_string(f"cache/{CACHE_NAME}"), max_size=toml_string(args.max_size)
                    ) if cache else "",
                    cache_key=f'cache = "{CACHE_NAME}"\n' if cache else "",
                )

            def check(proxy: Proxy) -> None:
                where = check_loopback_only(proxy.proc.pid, "twisted-proxy", proxy.logs)
                check_origin(proxy.port, "twisted-proxy check (GET through the reverse listener to the suite server)",
                             proxy.logs + logs)
                print(f"twisted-proxy (pid {proxy.proc.pid}, {args.proxy_root}) listening on {where} only", flush=True)

            with proxy_starting(cache), running_proxy(procs, args, tmp, "front", make_config, check,
                                                      root=args.proxy_root) as proxy:
                print_config(f"twisted-proxy config ({proxy.conf})", proxy.config)
                logs = proxy.logs + logs
                what = f'cache "{CACHE_NAME}"' if cache else "no cache"
                target = f"twisted-proxy ({what}) at http://127.0.0.1:{proxy.port}"
                print(f"running the suite against {target} ...", flush=True)
                started = time.monotonic()
                results, out_log = run_suite(procs, node, tmp, suite, helper, f"http://127.0.0.1:{proxy.port}", ids,
                                            args.timeout, logs, dump)
                if proxy.proc.poll() is not None:
                    raise BenchError(f"twisted-proxy exited with status {proxy.proc.returncode} during the run\n" + tails(logs))
                print_cache_status(admin)
        seconds = time.monotonic() - started
        if origin_proc.poll() is not None:
            raise BenchError(f"the cache-tests server exited with status {origin_proc.returncode} during the run\n" + tails(logs))

        if dump:
            print_dump(dump, out_log, origin_logs[0])
        summary = summarize(meta, results, selected)
        print_report(summary, target, seconds, goal=not args.direct and not args.suite_id)
        if args.json:
            doc = {
                "suite": {"package": SUITE_PACKAGE, "version": SUITE_VERSION},
                "mode": "direct" if args.direct else ("no-cache" if args.no_cache else "cache"),
                "target": target,
                "proxy_root": None if args.direct else args.proxy_root,
                "suite_id": args.suite_id,
                "seconds": round(seconds, 1),
                "required_goal": REQUIRED_GOAL,
                **summary,
            }
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
            print(f"summary written to {args.json}")
        return 0
    except BenchError as e:
        print(f"\nerror: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
