#!/usr/bin/env python3
"""The benchmark run (started by scripts/bench, which builds the release binaries first).

Starts redis-server, dynalite, a saver and 2 gateways on free loopback ports, runs the scenarios below one after
the other, writes every raw result to bench/runs/<UTC timestamp>/ (ignored by git) with a summary (summary.json,
summary.md) and a chart (fanout-latency.svg), and stops everything it started at the end, also on failure, Ctrl-C
or SIGTERM (children also get SIGKILL if this process dies: PR_SET_PDEATHSIG). `--make-reference RUN_DIR` copies
a run's summary, chart and the raw files docs/benchmarks.md cites to bench/reference/, which is committed.

  G  redis-benchmark of the edit script itself (EVALSHA of json.lua+edit.lua, KEYS/ARGV as redis.rs sends them,
     2 subscribers on the channel like 2 gateways): -c 50 unpipelined and -c 50 -P 16. The physical reference.
  D  10,000 idle WebSocket connections on gateway 1 (fresh process): VmRSS before, while holding, after.
  A  1 project, 2 clients on different gateways, 50 edits/s each, 20 s.
  B  50 projects x 4 clients x 5 edits/s = 1,000 edits/s, 30 s, 4 objects per project.
  F  write amplification during B: items the saver wrote per pass vs the distinct objects changed per interval.
  C  ramp 20 projects x 5 clients, raising the per-client rate every step (10 s measured) until fan-out p99 >
     100 ms, an error/disconnect/missing receipt, or achieved < 95 % of target; the highest sustained edits/s.
  P  perf profile (cpu-clock sampling; the VM has no hardware counters) of the whole machine and of gateway 1 during
     a B-like load.
  E  saver rate: target/release/examples/rate, 3 times (10,000 changed objects over 100 projects, saver items/s
     beside a raw BatchWriteItem loop to the same dynalite, both in that one process run); after the servers above
     are stopped, since it starts its own redis-server and dynalite.
  S  scale-out: C's ramp against one redis-server, then against a 3 + 3 Redis Cluster (REDIS_CLUSTER_NODES, same
     binaries), each with a fresh saver and 2 gateways; the highest sustained edits/s of each and the CPU per edit
     of the gateways, the Redis primaries and replicas at that step.

The machine is shared: the run first waits (at most 2 minutes) until other work uses < 0.3 cores, and every scenario
records the CPU of each process it started (and of the rest of the machine) over its run.

Options: --only LETTERS (comma separated), --no-profile, --out DIR; --chart RUN_DIR and --make-reference RUN_DIR
work on a finished run without running anything. To measure a changed or reconfigured gateway against the same
load: BENCH_GATEWAY_BIN (another gateway binary), BENCH_GATEWAY_ENV (JSON object of extra gateway environment
variables). BENCH_BASELINE_GATEWAY_BIN adds scenario W: after C, both gateways restart with that binary (today's
main, say), B's load and C's ramp run again against it, and the gateways restart with the measured binary.
"""

import argparse
import ctypes
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = ROOT / "target" / "release"
HARD_LIMIT_S = 14 * 60
T0 = time.monotonic()
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = resource.getpagesize() // 1024

# Per-client rates of the ramp (C); 20 x 5 = 100 clients, so total = 100 x rate.
RAMP_RATES = [5, 10, 20, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200, 250, 300]
RAMP_P99_LIMIT_MS = 100.0
SAVE_INTERVAL_MS = 5000
# To measure another gateway binary, or extra gateway environment as JSON (the reference run uses neither).
GATEWAY_BIN = Path(os.environ.get("BENCH_GATEWAY_BIN", REL / "gateway"))
# Scenario W: a second gateway binary (today's main, say) measured under B's and C's load in the same run.
BASELINE_GATEWAY_BIN = os.environ.get("BENCH_BASELINE_GATEWAY_BIN")
if BASELINE_GATEWAY_BIN:
    HARD_LIMIT_S += 8 * 60  # W runs B and C a second time
GATEWAY_ENV_EXTRA = json.loads(os.environ.get("BENCH_GATEWAY_ENV", "{}"))


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def elapsed():
    return time.monotonic() - T0


class Abort(Exception):
    pass


def _on_signal(signum, _frame):
    raise Abort(f"signal {signum}")


# ---------------------------------------------------------------------------------------------------------------
# processes

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1


def _preexec(nofile):
    def fn():
        # Die with us, whatever happens to us.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return fn


class Procs:
    """Every process this run starts, each in its own process group; stopped in reverse order."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.items = []  # (name, Popen)

    def start(self, name, argv, env=None, nofile=False, stdout=None):
        logf = open(self.logdir / f"{name}.log", "ab")
        p = subprocess.Popen(
            [str(a) for a in argv],
            stdout=stdout if stdout is not None else logf,
            stderr=logf,
            env=env,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_preexec(nofile),
        )
        p._bench_log = logf  # noqa: SLF001
        self.items.append((name, p))
        return p

    def stop(self, p, timeout=10.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        p._bench_log.close()  # noqa: SLF001
        self.items = [(n, q) for n, q in self.items if q is not p]

    def stop_all(self):
        for _name, p in reversed(list(self.items)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping pid {p.pid}: {e}")


# The floor of an edit's Redis work: write the object, record it changed, mark the project dirty, publish.
BARE_EDIT_SCRIPT = ("redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('SADD', KEYS[2], ARGV[1]) "
                    "redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[4]) redis.call('PUBLISH', ARGV[5], ARGV[2]) "
                    "return 1")


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, Redis Cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def bucket_tag(project: str, buckets: int = 256) -> str:
    """The hash tag of a project's bucket, as shared/src/hot/keys.rs computes it."""
    bucket = crc16(project.encode()) % buckets
    width = 16384 // buckets
    n = 0
    while True:
        tag = f"b{bucket}.{n}"
        if bucket * width <= crc16(tag.encode()) % 16384 < (bucket + 1) * width:
            return tag
        n += 1


def redis_us_per_edit(cpu, brief):
    """Redis CPU (all its processes) per achieved edit over a loadgen run, in µs."""
    rate = brief.get("achievedEditsPerSec") or 0
    cores = sum(v for k, v in cpu.items() if k.startswith("redis") and k != "redis_evalsha_usec_per_call"
                and k != "redis_evalsha_calls" and isinstance(v, (int, float)))
    return round(cores * 1e6 / rate, 1) if rate else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_cluster_port():
    """A free port P whose cluster bus port P + 10000 is free too (so P is at most 55535)."""
    while True:
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
            return port
        except OSError:
            continue


def wait_port(port, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def http_json(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def http_text(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def wait_http(url, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            time.sleep(0.1)
    return False


def proc_cpu_s(pid):
    """utime + stime of a live process, in seconds (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def machine_ticks():
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts), idle


# ---------------------------------------------------------------------------------------------------------------
# the bench


class Bench:
    def __init__(self, out, only, profile):
        self.out = out
        self.only = only
        self.profile = profile
        self.procs = Procs(out / "logs")
        self.summary = {"scenarios": {}, "notes": []}
        self.roles = {}  # role -> pid (servers)

    # -- helpers --------------------------------------------------------------------------------------------------

    def want(self, letter):
        return self.only is None or letter in self.only

    def save_summary(self):
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2) + "\n")

    def redis_cli(self, *args, timeout=30, port=None):
        r = subprocess.run(
            ["redis-cli", "-p", str(port or self.redis_port), *[str(a) for a in args]],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"redis-cli {args[:2]}: {r.stderr.strip()}")
        return r.stdout.strip()

    def redis_info(self, section, port=None):
        out = {}
        for line in self.redis_cli("INFO", section, port=port).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def evalsha_stats(self):
        """calls and usec of EVALSHA in Redis (INFO commandstats), plus Redis' CPU seconds; summed over a
        cluster's primaries when the hot state is a cluster."""
        total = {"calls": 0, "usec": 0, "cpu_s": 0.0}
        for port in getattr(self, "primary_ports", None) or [self.redis_port]:
            stats = self.redis_info("commandstats", port)
            row = stats.get("cmdstat_evalsha", "")
            kv = dict(p.split("=") for p in row.split(",") if "=" in p)
            cpu = self.redis_info("cpu", port)
            total["calls"] += int(kv.get("calls", 0))
            total["usec"] += int(kv.get("usec", 0))
            total["cpu_s"] += float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0))
        return total

    def cpu_snapshot(self):
        snap = {role: proc_cpu_s(pid) for role, pid in self.roles.items()}
        snap["_machine"] = machine_ticks()
        snap["_t"] = time.monotonic()
        return snap

    @staticmethod
    def cpu_delta(a, b, extra=None):
        """Fraction of one core used by each role between two snapshots, and the machine's busy fraction."""
        wall = b["_t"] - a["_t"]
        out = {}
        for role in a:
            if role.startswith("_"):
                continue
            if a[role] is not None and b.get(role) is not None:
                out[role] = round((b[role] - a[role]) / wall, 3)
        for role, cpu_s in (extra or {}).items():
            out[role] = round(cpu_s / wall, 3)
        total_a, idle_a = a["_machine"]
        total_b, idle_b = b["_machine"]
        dt_total = total_b - total_a
        out["machine_busy_of_2_cores"] = round(2 * (1 - (idle_b - idle_a) / dt_total), 3) if dt_total else None
        if out["machine_busy_of_2_cores"] is not None:
            # Whatever else ran on the machine meanwhile (other users' builds, the kernel's softirq work not
            # charged to a process): busy cores minus the processes this run started.
            # /proc/stat's idle time of a tickless idle CPU is only approximate on this VM: at low load
            # the machine figure can come out below our own processes' sum; then there is no estimate.
            mine = sum(v for k, v in out.items() if k != "machine_busy_of_2_cores")
            others = out["machine_busy_of_2_cores"] - mine
            out["others_cores"] = round(max(0.0, others), 3) if others > -0.05 else None
        out["wall_s"] = round(wall, 2)
        return out

    def run_loadgen(self, name, args, timeout, on_sample=None):
        """Runs loadgen to completion; returns (report, cpu fractions over the run)."""
        out_file = self.out / f"{name}.json"
        argv = [REL / "loadgen", *args, "--out", out_file]
        (self.out / f"{name}.cmd").write_text(" ".join(str(a) for a in argv) + "\n")
        before = self.cpu_snapshot()
        r_before = self.evalsha_stats()
        started = time.time()
        p = self.procs.start(name, argv, nofile=True, stdout=subprocess.DEVNULL)
        self.last_loadgen_pid = p.pid
        end = time.monotonic() + timeout
        rusage = None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                rusage = ru
                break
            if on_sample:
                on_sample(p, started)
            if time.monotonic() > end:
                self.procs.stop(p)
                raise RuntimeError(f"{name}: loadgen did not finish within {timeout} s")
            time.sleep(0.2)
        self.procs.stop(p)
        after = self.cpu_snapshot()
        r_after = self.evalsha_stats()
        lg_cpu = rusage.ru_utime + rusage.ru_stime
        cpu = self.cpu_delta(before, after, {"loadgen": lg_cpu})
        calls = r_after["calls"] - r_before["calls"]
        cpu["redis_evalsha_usec_per_call"] = (
            round((r_after["usec"] - r_before["usec"]) / calls, 2) if calls else None
        )
        cpu["redis_evalsha_calls"] = calls
        if p.returncode != 0 or not out_file.exists():
            raise RuntimeError(f"{name}: loadgen exited with {p.returncode}; see logs/{name}.log")
        report = json.loads(out_file.read_text())
        report["_launchedAtMs"] = int(started * 1000)
        return report, cpu

    # -- servers --------------------------------------------------------------------------------------------------

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
            DYNAMODB_ENDPOINT=f"http://127.0.0.1:{self.dynalite_port}",
            CANVAS_TABLE="canvas_bench",
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}",
            RUST_LOG="warn",
        )
        if getattr(self, "cluster_nodes", None):
            env["REDIS_CLUSTER_NODES"] = ",".join(f"127.0.0.1:{p}" for p in self.cluster_nodes)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def start_servers(self, saver_env=None, cluster=False):
        if cluster:
            self.start_cluster()
        else:
            self.cluster_nodes = None
            self.primary_ports = None
            self.redis_port = free_port()
            rdir = self.out / "redis"
            rdir.mkdir(exist_ok=True)
            p = self.procs.start(
                "redis",
                ["redis-server", "--port", self.redis_port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
                 "no", "--dir", rdir, "--maxmemory-policy", "noeviction", "--maxclients", "10000"],
            )
            self.roles["redis"] = p.pid
            assert wait_port(self.redis_port), "redis-server did not start"

        self.dynalite_port = free_port()
        p = self.procs.start(
            "dynalite",
            ["node", ROOT / "tools/dynalite/run.js", "--port", self.dynalite_port],
            env={**os.environ, "CANVAS_PARENT_PID": str(os.getpid())},
        )
        self.roles["dynalite"] = p.pid
        assert wait_port(self.dynalite_port), "dynalite did not start"

        self.saver_http = free_port()
        p = self.procs.start(
            "saver",
            [REL / "saver"],
            env=self.env(**{
                "CANVAS_CREATE_TABLE": "true",
                "SAVE_INTERVAL_MS": SAVE_INTERVAL_MS,
                "SAVER_HTTP_ADDR": f"127.0.0.1:{self.saver_http}",
                "SAVER_GRPC_ADDR": f"127.0.0.1:{free_port()}",
                **(saver_env or {}),
            }),
        )
        self.roles["saver"] = p.pid
        end = time.monotonic() + 30
        while True:
            try:
                if self.saver_metrics()["autoSave"]["state"] == "running":
                    break
            except Exception:
                pass
            if time.monotonic() > end or p.poll() is not None:
                raise RuntimeError("saver did not reach state running (table creation); see logs/saver.log")
            time.sleep(0.1)

        self.gw_ports = []
        for i in (1, 2):
            self.start_gateway(i)

    def start_cluster(self):
        """Six redis-servers as a 3 + 3 Redis Cluster (one replica per primary), settled before it returns."""
        self.cluster_nodes = []
        while len(self.cluster_nodes) < 6:
            port = free_cluster_port()
            if port not in self.cluster_nodes:
                self.cluster_nodes.append(port)
        for i, port in enumerate(self.cluster_nodes, 1):
            ndir = self.out / f"redis-node{i}"
            ndir.mkdir(exist_ok=True)
            p = self.procs.start(
                f"redis{i}",
                ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", ndir, "--maxmemory-policy", "noeviction", "--maxclients", "10000",
                 "--cluster-enabled", "yes", "--cluster-config-file", ndir / "nodes.conf",
                 "--cluster-node-timeout", "5000", "--repl-diskless-sync-delay", "0"],
            )
            self.roles[f"redis{i}"] = p.pid
            assert wait_port(port), f"redis node {i} did not start"
        r = subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.cluster_nodes],
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if r.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create: {r.stdout[-400:]} {r.stderr[-400:]}")
        end = time.monotonic() + 30
        while True:
            states = [self.redis_cli("CLUSTER", "INFO", port=p) for p in self.cluster_nodes]
            roles = [self.redis_cli("ROLE", port=p).splitlines()[0] for p in self.cluster_nodes]
            if all("cluster_state:ok" in s for s in states) and roles.count("master") == 3:
                check = subprocess.run(["redis-cli", "--cluster", "check", f"127.0.0.1:{self.cluster_nodes[0]}"],
                                       capture_output=True, text=True, timeout=30)
                if check.returncode == 0 and "All 16384 slots covered" in check.stdout:
                    break
            if time.monotonic() > end:
                raise RuntimeError("the Redis Cluster did not settle within 30 s")
            time.sleep(0.2)
        self.primary_ports = [p for p, role in zip(self.cluster_nodes, roles) if role == "master"]
        self.redis_port = self.primary_ports[0]
        for i, port in enumerate(self.cluster_nodes, 1):
            self.roles[f"redis-{'primary' if port in self.primary_ports else 'replica'}{i}"] = \
                self.roles.pop(f"redis{i}")

    def start_gateway(self, i, binary=None):
        port = free_port()
        p = self.procs.start(
            f"gateway{i}",
            [binary or GATEWAY_BIN],
            env=self.env(**GATEWAY_ENV_EXTRA,
                GATEWAY_ADDR=f"127.0.0.1:{port}",
                CANVAS_AUTH_DISABLED="true",
                # Benchmarks measure capacity, not the abuse limits: no per-connection edit rate, no per-IP cap
                # (every loadgen client comes from 127.0.0.1).
                CANVAS_MAX_EDITS_PER_SECOND="0",
                CANVAS_MAX_CONNECTIONS_PER_IP="0",
                CANVAS_MAX_CONNECTIONS_PER_USER="0",
            ),
            nofile=True,
        )
        self.roles[f"gateway{i}"] = p.pid
        if not wait_http(f"http://127.0.0.1:{port}/healthz"):
            raise RuntimeError(f"gateway{i} did not start; see logs/gateway{i}.log")
        if len(self.gw_ports) < i:
            self.gw_ports.append(port)
        else:
            self.gw_ports[i - 1] = port
        return p

    def saver_metrics(self):
        return http_json(f"http://127.0.0.1:{self.saver_http}/metrics")

    def wait_saved(self, timeout=20.0):
        """Until the saver has nothing dirty (so a scenario starts from a clean slate)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if (self.saver_metrics()["dirtyProjects"].get("count") or 0) == 0:
                    return True
            except Exception:
                pass
            time.sleep(0.25)
        return False

    def url(self, i):
        return f"ws://127.0.0.1:{self.gw_ports[i - 1]}"

    # -- G: the edit script under redis-benchmark -------------------------------------------------------------------

    def scenario_g(self):
        log("G: redis-benchmark of the edit script (EVALSHA)")
        scripts = ROOT / "shared/src/hot/scripts"
        # Exactly what redis.rs loads: json.lua, a newline, edit.lua (so the SHA is the gateways' own).
        text = (scripts / "json.lua").read_text() + "\n" + (scripts / "edit.lua").read_text()
        sha = self.redis_cli("SCRIPT", "LOAD", text)
        project = "bench-g"
        tag = bucket_tag(project)
        base = f"canvas:{{{tag}}}:{project}/"
        channel = base + "events"
        keys = [base + "objects", base + "mtimes", base + "meta", base + "changed", f"canvas:{{{tag}}}:dirty",
                base + "journal", f"canvas:{{{tag}}}:resident", channel]
        now = int(time.time() * 1000)
        self.redis_cli("HSET", base + "meta", "seq", 0, "loadedAt", now)
        # The object loadgen creates (serde_json writes keys sorted), then an update shaped like loadgen's.
        obj = {"id": "lg-0", "type": "rect", "x": 0, "y": 0, "width": 20, "height": 20, "fill": "#888"}
        obj_json = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        patch = '{"lg":{"c":"0a1b2c3d-17","n":123456,"t":1764170000000000},"x":4242,"y":1717}'
        limits = [64 * 1024, 10_000]

        def argv(op, body, against="", merged="", version=""):
            # As redis.rs sends them: no traceparent, no ifVersion, the default journal length and project
            # budget, no seq floor; `against`/`merged`/`version`: the text the gateway merged against and its merge.
            return [*keys, op, "lg-0", '"lg-0"', body, now, '"anonymous"', "0123456789abcdef0123456789abcdef",
                    *limits, "PUBLISH", project, "", "", 1000, 32 * 1024 * 1024, 0, against, merged, version]

        created = self.redis_cli("EVALSHA", sha, len(keys), *argv("c", obj_json))
        first = self.redis_cli("EVALSHA", sha, len(keys), *argv("u", patch))
        stored = self.redis_cli("HGET", keys[0], "lg-0")
        # Two subscribers, like two gateways with clients in the project.
        subs = [self.procs.start(f"g-subscriber{i}", ["redis-cli", "-p", self.redis_port, "SUBSCRIBE", channel],
                                 stdout=subprocess.DEVNULL) for i in (1, 2)]
        time.sleep(0.3)
        numsub = self.redis_cli("PUBSUB", "NUMSUB", channel).splitlines()
        results = {
            "sha": sha,
            "createReply": created.splitlines(),
            "firstUpdateReply": first.splitlines(),
            "storedObjectAfterUpdates": stored,
            "subscribersBefore": int(numsub[-1]) if numsub else None,
            "runs": {},
        }
        # An update the gateway merged: the script finds the stored text unchanged and writes the merge. The same
        # command repeats, so the text written back is the one it checks (same length as a real merge's result),
        # and every call takes that path.
        cmd_tail = ["EVALSHA", sha, len(keys), *argv("u", patch, stored, stored, 3)]
        # The same update merged by the script (a gateway that does not know the object's text).
        script_tail = ["EVALSHA", sha, len(keys), *argv("u", patch)]
        # For scale: the same call with a trivial script (what a script call costs before the edit's work), and a
        # bare write-and-publish script (HSET + SADD + ZADD + PUBLISH on the edit's keys: the floor an edit's Redis
        # work can come down to).
        trivial = self.redis_cli("SCRIPT", "LOAD", "return 1")
        bare = self.redis_cli("SCRIPT", "LOAD", BARE_EDIT_SCRIPT)
        bare_tail = ["EVALSHA", bare, 3, keys[0], keys[3], keys[4], "lg-0", obj_json, now, project, channel]
        runs = (("c50", ["-c", "50"], 100_000, cmd_tail),
                ("c50_P16", ["-c", "50", "-P", "16"], 160_000, cmd_tail),
                ("script_merge_c50", ["-c", "50"], 100_000, script_tail),
                ("trivial_c50", ["-c", "50"], 100_000, ["EVALSHA", trivial, 0]),
                ("bare_c50", ["-c", "50"], 100_000, bare_tail))
        for label, extra, n, tail in runs:
            argv_b = ["redis-benchmark", "-p", self.redis_port, *extra, "-n", n, *tail]
            (self.out / f"G-redis-benchmark-{label}.cmd").write_text(
                " ".join(json.dumps(str(a)) if re.search(r"[\s{}\"#]", str(a)) or str(a) == "" else str(a)
                         for a in argv_b) + "\n")
            self.redis_cli("CONFIG", "RESETSTAT")
            before = self.cpu_snapshot()
            r = subprocess.run([str(a) for a in argv_b], capture_output=True, text=True, timeout=120)
            after = self.cpu_snapshot()
            inside = self.evalsha_stats()
            # Without the progress lines it prints while running (" ... rps=...").
            raw = "\n".join(line for line in r.stdout.replace("\r", "\n").splitlines() if line.strip() and "rps=" not in line)
            (self.out / f"G-redis-benchmark-{label}.txt").write_text(raw + r.stderr)
            m = re.search(r"throughput summary:\s*([\d.]+) requests per second", raw)
            lat = None
            lm = re.search(r"latency summary \(msec\):\s*\n\s*avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.\s]+)", raw)
            if lm:
                vals = [float(x) for x in lm.group(1).split()[:6]]
                lat = dict(zip(["avg", "min", "p50", "p95", "p99", "max"], vals))
            results["runs"][label] = {
                "requests": n,
                "opsPerSec": float(m.group(1)) if m else None,
                "latencyMs": lat,
                "redisUsecPerCall": round(inside["usec"] / inside["calls"], 2) if inside["calls"] else None,
                "cpu": self.cpu_delta(before, after),
            }
            log(f"  G {label}: {results['runs'][label]['opsPerSec']} EVALSHA/s, "
                f"{results['runs'][label]['redisUsecPerCall']} us/call inside Redis, latency {lat}")
        numsub = self.redis_cli("PUBSUB", "NUMSUB", channel).splitlines()
        results["subscribersAfter"] = int(numsub[-1]) if numsub else None
        results["seqAfter"] = self.redis_cli("HGET", base + "meta", "seq")
        for s in subs:
            self.procs.stop(s)
        self.summary["scenarios"]["G"] = results
        self.save_summary()

    # -- D: idle connections --------------------------------------------------------------------------------------

    def scenario_d(self):
        log("D: 10,000 idle connections on gateway 1")
        gw = self.roles["gateway1"]
        time.sleep(1.0)
        rss_before = proc_status(gw, "VmRSS")
        samples = []

        def sample(_p, started):
            samples.append((round(time.time() - started, 2), proc_status(gw, "VmRSS"), proc_threads(gw)))

        report, cpu = self.run_loadgen(
            "D-idle",
            ["--url", self.url(1), "--projects", 100, "--clients", 100, "--rate", 0, "--objects", 0,
             "--duration", 15, "--warmup", 0, "--connect-timeout", 20, "--project-prefix", "idle"],
            timeout=80,
            on_sample=sample,
        )
        time.sleep(2.0)
        rss_after = proc_status(gw, "VmRSS")
        d = report["durations"]
        hold_from, hold_to = d["connectSecs"] + 0.5, d["connectSecs"] + d["warmupSecs"] + d["measuredSecs"]
        held = [s[1] for s in samples if hold_from <= s[0] <= hold_to and s[1]]
        held.sort()
        conns = report["connections"]
        rss_held = held[len(held) // 2] if held else None
        res = {
            "connectionsPlanned": conns["planned"],
            "connectionsHeld": conns["connectionsHeld"],
            "connectFailures": conns["connectFailures"],
            "connectFailureReasons": conns["connectFailureReasons"],
            "connectSecs": d["connectSecs"],
            "rssBeforeKiB": rss_before,
            "rssHeldMedianKiB": rss_held,
            "rssHeldMaxKiB": max(held) if held else None,
            "rssAfterCloseKiB": rss_after,
            "vmHwmKiB": proc_status(gw, "VmHWM"),
            "rssPerConnectionKiB": round((rss_held - rss_before) / max(conns["connectionsHeld"], 1), 2)
            if rss_held else None,
            "samples": samples,
            "cpu": cpu,
        }
        log(f"  D: held {conns['connectionsHeld']} connections, RSS {rss_before} KiB -> {rss_held} KiB "
            f"({res['rssPerConnectionKiB']} KiB/connection), after close {rss_after} KiB")
        self.summary["scenarios"]["D"] = res
        self.save_summary()

    # -- A, B(+F), C --------------------------------------------------------------------------------------------------

    @staticmethod
    def brief(report):
        e, f, a = report["edits"], report["fanoutLatencyMs"], report["ackLatencyMs"]
        return {
            "targetEditsPerSec": e["targetEditsPerSec"],
            "achievedEditsPerSec": e["achievedEditsPerSec"],
            "sent": e["sent"],
            "acked": e["acked"],
            "missedSends": e["missedSends"],
            "fanoutMs": {k: f.get(k) for k in ("count", "p50", "p95", "p99", "max", "mean")},
            "ackMs": {k: a.get(k) for k in ("count", "p50", "p95", "p99", "max", "mean")},
            "errors": report["errors"]["total"],
            "errorsByCode": report["errors"]["byCode"],
            "disconnects": report["connections"]["disconnects"],
            "connectFailures": report["connections"]["connectFailures"],
            "receipts": report["receipts"],
            "seq": report["seq"],
            "anomalies": report["anomalies"],
            "warnings": report.get("warnings", []),
        }

    def scenario_a(self):
        log("A: 1 project, 2 clients on 2 gateways, 50 edits/s each, 20 s")
        report, cpu = self.run_loadgen(
            "A-pair",
            ["--url", self.url(1), "--url", self.url(2), "--projects", 1, "--clients", 2, "--rate", 50,
             "--objects", 4, "--duration", 20, "--warmup", 1, "--project-prefix", "pair"],
            timeout=60,
        )
        res = {**self.brief(report), "cpu": cpu}
        self.summary["scenarios"]["A"] = res
        self.save_summary()
        log(f"  A: {res['achievedEditsPerSec']} edits/s, fan-out p50/p99 {res['fanoutMs']['p50']}/"
            f"{res['fanoutMs']['p99']} ms, ack p99 {res['ackMs']['p99']} ms")
        # The gateways run the very script G measured.
        self.summary["scenarios"].setdefault("G", {})["gatewaysUseSameSha"] = (
            self.redis_cli("SCRIPT", "EXISTS", self.summary["scenarios"].get("G", {}).get("sha", "0" * 40))
            == "1")

    def steady_load(self, label, prefix):
        """B's load: 50 projects x 4 clients x 5 edits/s over both gateways, 30 s."""
        return self.run_loadgen(
            label,
            ["--url", self.url(1), "--url", self.url(2), "--projects", 50, "--clients", 4, "--rate", 5,
             "--objects", 4, "--duration", 30, "--warmup", 1, "--project-prefix", prefix],
            timeout=90,
        )

    def measured(self, report, cpu):
        """A load run's figures, with the CPU of each process and Redis' CPU per achieved edit."""
        brief = self.brief(report)
        return {**brief, "cpu": cpu, "redisCpuUsPerEdit": redis_us_per_edit(cpu, brief)}

    def scenario_b(self):
        log("B: 50 projects x 4 clients x 5 edits/s (1,000 edits/s), 30 s, 4 objects per project (+F)")
        if not self.wait_saved():
            self.summary["notes"].append("B: the saver still had dirty projects 20 s after A")
        polls = []
        stop = threading.Event()

        gw_prom = {}

        def poll():
            started = time.monotonic()
            while not stop.is_set():
                try:
                    polls.append((int(time.time() * 1000), self.saver_metrics()))
                except Exception:
                    pass
                # What an operator's Prometheus scrapes off a busy gateway: once, mid-B (counters since start).
                if "text" not in gw_prom and time.monotonic() - started > 15:
                    text = safe(lambda: http_text(f"http://127.0.0.1:{self.gw_ports[0]}/metrics/prometheus"))
                    if text:
                        gw_prom["text"] = text
                stop.wait(1.0)

        m0 = self.saver_metrics()
        prom0 = safe(lambda: http_text(f"http://127.0.0.1:{self.saver_http}/metrics/prometheus"))
        t = threading.Thread(target=poll, daemon=True)
        t.start()
        try:
            report, cpu = self.steady_load("B-steady", "steady")
            # Let the saver write the tail of B (one more interval, then until nothing is dirty).
            time.sleep(SAVE_INTERVAL_MS / 1000 + 1)
            self.wait_saved(15)
            time.sleep(1.2)
        finally:
            stop.set()
            t.join(5)
        m1 = self.saver_metrics()
        prom1 = safe(lambda: http_text(f"http://127.0.0.1:{self.saver_http}/metrics/prometheus"))
        if "text" in gw_prom:
            (self.out / "B-gateway1-prometheus.txt").write_text(gw_prom["text"])
        (self.out / "F-saver-metrics-before.json").write_text(json.dumps(m0, indent=2))
        (self.out / "F-saver-metrics-after.json").write_text(json.dumps(m1, indent=2))
        (self.out / "F-saver-metrics-polls.json").write_text(json.dumps(polls))
        if prom0 and prom1:
            (self.out / "F-saver-prometheus-before.txt").write_text(prom0)
            (self.out / "F-saver-prometheus-after.txt").write_text(prom1)
        res = self.measured(report, cpu)
        self.summary["scenarios"]["B"] = res
        self.summary["scenarios"]["F"] = amplification(report, m0, m1, polls, objects=50 * 4)
        if prom0 and prom1:
            self.summary["scenarios"]["F"]["prometheusDeltaDuringB"] = prom_delta(prom0, prom1)
        self.save_summary()
        f = self.summary["scenarios"]["F"]
        log(f"  B: {res['achievedEditsPerSec']} edits/s, fan-out p50/p99 {res['fanoutMs']['p50']}/"
            f"{res['fanoutMs']['p99']} ms, ack p99 {res['ackMs']['p99']} ms")
        log(f"  F: steady passes {f['steadyPasses']}, items {f['steadyItems']} vs ideal {f['steadyIdeal']}: "
            f"amplification {f['amplification']}; all B passes wrote {f['itemsDuringB']} items")

    def scenario_c(self):
        log("C: ramp 20 projects x 5 clients until fan-out p99 > 100 ms, errors or < 95 % of target")
        res = self.ramp("C", "ramp")
        g = self.summary["scenarios"].get("G", {}).get("runs", {})
        for label in ("c50", "c50_P16"):
            ops = (g.get(label) or {}).get("opsPerSec")
            if ops and res["highestSustainedEditsPerSec"]:
                res[f"ratioToScript_{label}"] = round(res["highestSustainedEditsPerSec"] / ops, 3)
        self.summary["scenarios"]["C"] = res
        self.save_summary()
        log(f"  C: highest sustained {res['highestSustainedEditsPerSec']} edits/s; "
            f"ratio to G c50 {res.get('ratioToScript_c50')}, to G P16 {res.get('ratioToScript_c50_P16')}")

    # -- W: B and C against the baseline gateway binary, in this run --------------------------------------------

    def restart_gateway(self, i, binary=None):
        self.procs.stop(next(p for n, p in self.procs.items if n == f"gateway{i}"))
        self.start_gateway(i, binary)

    def restart_gateways(self, binary):
        for i in (1, 2):
            self.restart_gateway(i, binary)

    def scenario_w(self):
        log(f"W: B's load and C's ramp again, against the baseline gateway {BASELINE_GATEWAY_BIN}")
        self.wait_saved()
        self.restart_gateways(BASELINE_GATEWAY_BIN)
        try:
            b = self.measured(*self.steady_load("W-B-steady", "steady-base"))
            self.wait_saved()
            c = self.ramp("W-C", "ramp-base")
        finally:
            self.restart_gateways(GATEWAY_BIN)
        res = {"gatewayBin": BASELINE_GATEWAY_BIN, "B": b, "C": c}
        ours = self.summary["scenarios"].get("C", {}).get("highestSustainedEditsPerSec")
        if ours and c.get("highestSustainedEditsPerSec"):
            res["sustainedRatioCOverBaseline"] = round(ours / c["highestSustainedEditsPerSec"], 3)
        self.summary["scenarios"]["W"] = res
        self.save_summary()
        log(f"  W: baseline B {b['achievedEditsPerSec']} edits/s at {b['redisCpuUsPerEdit']} us Redis CPU per edit; "
            f"baseline C highest sustained {c.get('highestSustainedEditsPerSec')} edits/s "
            f"(ours / baseline: {res.get('sustainedRatioCOverBaseline')})")

    def ramp(self, label, prefix):
        """Scenario C's ramp against the running stack: 20 projects x 5 clients on both gateways, rate per client
        raised until fan-out p99 > 100 ms, errors or < 95 % of the target; two bisection steps at the end."""
        steps = []
        best = None

        def step(rate):
            name = f"{label}-ramp-{rate:g}"
            report, cpu = self.run_loadgen(
                name,
                ["--url", self.url(1), "--url", self.url(2), "--projects", 20, "--clients", 5, "--rate", rate,
                 "--objects", 10, "--duration", 10, "--warmup", 1, "--project-prefix", prefix],
                timeout=60,
            )
            b = self.measured(report, cpu)
            reasons = []
            if b["fanoutMs"]["p99"] is None or b["fanoutMs"]["p99"] > RAMP_P99_LIMIT_MS:
                reasons.append(f"fan-out p99 {b['fanoutMs']['p99']} ms > {RAMP_P99_LIMIT_MS:g} ms")
            if b["errors"]:
                reasons.append(f"{b['errors']} errors {b['errorsByCode']}")
            if b["disconnects"] or b["connectFailures"]:
                reasons.append(f"{b['disconnects']} disconnects, {b['connectFailures']} connect failures")
            if b["receipts"]["missing"]:
                reasons.append(f"{b['receipts']['missing']} receipts missing")
            if b["achievedEditsPerSec"] < 0.95 * b["targetEditsPerSec"]:
                reasons.append(f"achieved {b['achievedEditsPerSec']} < 95 % of {b['targetEditsPerSec']}")
            row = {"ratePerClient": rate, **b, "passed": not reasons, "failedBecause": reasons}
            steps.append(row)
            log(f"  {label} {rate:>5g}/client: target {b['targetEditsPerSec']:>7.0f} achieved "
                f"{b['achievedEditsPerSec']:>7.1f} fan-out p50/p99 {b['fanoutMs']['p50']}/{b['fanoutMs']['p99']} "
                f"ms, busy {cpu['machine_busy_of_2_cores']} cores -> {'ok' if not reasons else '; '.join(reasons)}")
            return row

        last_ok, first_bad = None, None
        for rate in RAMP_RATES:
            if elapsed() > HARD_LIMIT_S - 200:
                self.summary["notes"].append(f"{label}: ramp cut short by the time budget")
                break
            row = step(rate)
            if row["passed"]:
                last_ok = rate
            else:
                first_bad = rate
                break
        # Two bisection steps between the last good and the first bad rate.
        for _ in range(2):
            if last_ok is None or first_bad is None or first_bad - last_ok < 4 or elapsed() > HARD_LIMIT_S - 200:
                break
            mid = round((last_ok + first_bad) / 2)
            row = step(mid)
            if row["passed"]:
                last_ok = mid
            else:
                first_bad = mid
        ok_rows = [s for s in steps if s["passed"]]
        if ok_rows:
            best = max(ok_rows, key=lambda s: s["achievedEditsPerSec"])
        return {
            "steps": steps,
            "highestSustainedEditsPerSec": best["achievedEditsPerSec"] if best else None,
            "atRatePerClient": best["ratePerClient"] if best else None,
            "firstFailingRatePerClient": first_bad,
            "firstFailure": next((s["failedBecause"] for s in steps if not s["passed"]), None),
        }

    # -- S: scale-out -------------------------------------------------------------------------------------------------

    def scenario_s(self):
        """C's ramp against one Redis, then against a 3 + 3 Redis Cluster, same binaries, same machine; with the
        CPU per edit of the gateways and of the Redis processes at the highest sustained step."""
        log("S: C's ramp against one Redis, then against a 3-primary Redis Cluster")
        res = {}
        for topology in ("single", "cluster"):
            self.start_servers(cluster=topology == "cluster")
            ramp = self.ramp(f"S-{topology}", f"scale-{topology}")
            best = next((s for s in ramp["steps"] if s["passed"]
                         and s["achievedEditsPerSec"] == ramp["highestSustainedEditsPerSec"]), None)
            per_edit = {}
            if best:
                rate = best["achievedEditsPerSec"]
                cpu = best["cpu"]
                for group, match in (("gateways", "gateway"), ("redisPrimaries", "redis-primary"),
                                     ("redisReplicas", "redis-replica"), ("redis", "redis"), ("saver", "saver"),
                                     ("loadgen", "loadgen")):
                    if group == "redis":
                        cores = cpu.get("redis")
                    else:
                        cores = sum(v for k, v in cpu.items() if k.startswith(match) and isinstance(v, (int, float)))
                    if cores:
                        per_edit[group] = round(cores * 1e6 / rate, 1)
                per_edit["evalshaUsecPerCall"] = cpu.get("redis_evalsha_usec_per_call")
                per_edit["machineBusyCores"] = cpu.get("machine_busy_of_2_cores")
            res[topology] = {**ramp, "cpuMicrosecondsPerEdit": per_edit}
            self.summary["scenarios"]["S"] = res
            self.save_summary()
            log(f"  S {topology}: highest sustained {ramp['highestSustainedEditsPerSec']} edits/s; "
                f"CPU µs per edit {per_edit}")
            self.procs.stop_all()
            self.roles = {}

    # -- P: profile ---------------------------------------------------------------------------------------------------

    def scenario_p(self):
        perf = shutil.which("perf")
        if not perf:
            self.summary["scenarios"]["P"] = {"skipped": "perf not installed"}
            return
        probe = subprocess.run([perf, "record", "-e", "cpu-clock", "-o", "/dev/null", "--", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            self.summary["scenarios"]["P"] = {"skipped": f"perf record fails: {probe.stderr.strip()[:300]}"}
            return
        log("P: perf profile during a B-like load (1,000 edits/s over both gateways, 10 s sampled)")
        pdir = self.out / "profile"
        pdir.mkdir(exist_ok=True)
        gw1 = self.roles["gateway1"]
        recs = []

        def sample(p, started):
            if not recs and time.time() - started > 4:
                # System-wide flat profile (who uses the 2 cores) and gateway 1 with DWARF call graphs.
                recs.append(self.procs.start("perf-all", [perf, "record", "-e", "cpu-clock", "-F", 999, "-a",
                                                          "-o", pdir / "all.data", "--", "sleep", 10]))
                recs.append(self.procs.start("perf-gw1", [perf, "record", "-e", "cpu-clock", "-F", 999,
                                                          "--call-graph", "dwarf,16384", "-p", gw1,
                                                          "-o", pdir / "gateway1.data", "--", "sleep", 10]))

        report, cpu = self.run_loadgen(
            "P-profile-load",
            ["--url", self.url(1), "--url", self.url(2), "--projects", 50, "--clients", 4, "--rate", 5,
             "--objects", 4, "--duration", 16, "--warmup", 1, "--project-prefix", "prof"],
            timeout=70, on_sample=sample,
        )
        for r in recs:
            try:
                r.wait(30)
            except subprocess.TimeoutExpired:
                pass
            self.procs.stop(r)
        res = {"load": self.brief(report), "cpu": cpu, "files": {}}
        pid_roles = {pid: role for role, pid in self.roles.items()}
        if (pdir / "all.data").exists():
            pid_roles[self.last_loadgen_pid] = "loadgen"
            res["byProcess"] = by_process(perf, pdir / "all.data", pid_roles)
            (pdir / "all-by-process.json").write_text(json.dumps(res["byProcess"], indent=2))
            for role in ("gateway1", "gateway2", "redis", "loadgen"):
                pid = self.last_loadgen_pid if role == "loadgen" else self.roles.get(role)
                flat = perf_report(perf, pdir / "all.data",
                                   ["--pid", str(pid), "--no-children", "--sort", "dso,sym", "--percent-limit", "0",
                                    "--percentage", "relative"])
                (pdir / f"{role}-flat.txt").write_text(flat)
                res[f"{role}Categories"] = categorize(flat)
        if (pdir / "gateway1.data").exists():
            txt = perf_report(perf, pdir / "gateway1.data",
                              ["--children", "--sort", "sym", "-g", "none", "--percent-limit", "1"])
            (pdir / "gateway1-inclusive.txt").write_text(txt)
            res["gateway1Inclusive"] = inclusive(txt)
            flat = perf_report(perf, pdir / "gateway1.data",
                               ["--no-children", "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.05"])
            (pdir / "gateway1-dwarf-flat.txt").write_text(flat)
        for f in ("all.data", "gateway1.data"):
            # The raw samples are large; the text reports above are what is kept.
            (pdir / f).unlink(missing_ok=True)
        self.summary["scenarios"]["P"] = res
        self.save_summary()
        if "byProcess" in res:
            log("  P: CPU by process: " + ", ".join(f"{k} {v}%" for k, v in
                                                    res["byProcess"]["percentOfBothCores"].items()))
        if "gateway1Categories" in res:
            log("  P: gateway1 self time: " + ", ".join(f"{k} {v}%" for k, v in
                                                        list(res["gateway1Categories"].items())[:8]))

    # -- E: saver rate ------------------------------------------------------------------------------------------------

    def scenario_e(self, repeats=3):
        log(f"E: saver rate (examples/rate: 10,000 changed objects over 100 projects vs raw BatchWriteItem), "
            f"{repeats} runs")
        exe = REL / "examples" / "rate"
        env = {**os.environ, "RATE_PROJECTS": "100", "RATE_OBJECTS": "100", "RATE_CONCURRENCY": "8"}
        (self.out / "E-saver-rate.cmd").write_text(
            "RATE_PROJECTS=100 RATE_OBJECTS=100 RATE_CONCURRENCY=8 target/release/examples/rate\n")
        runs = []
        for i in range(1, repeats + 1):
            p = self.procs.start(f"E-saver-rate-{i}", [exe], env=env, stdout=subprocess.PIPE)
            try:
                out, _ = p.communicate(timeout=180)
            finally:
                self.procs.stop(p)
            text = out.decode()
            (self.out / f"E-saver-rate-{i}.txt").write_text(text)

            def rate(pattern):
                m = re.search(pattern + r".*?=\s*([\d.]+) items/s", text)
                return float(m.group(1)) if m else None

            run = {
                "rawBeforeItemsPerSec": rate(r"raw BatchWriteItem loop \(before\)"),
                "saverItemsPerSec": rate(r"saver pass"),
                "rawAfterItemsPerSec": rate(r"raw BatchWriteItem loop \(after\)"),
                "exitCode": p.returncode,
            }
            m = re.search(r"saver / raw \(mean of both raw runs\): ([\d.]+)", text)
            run["saverOverRaw"] = float(m.group(1)) if m else None
            runs.append(run)
            log(f"  E run {i}: saver {run['saverItemsPerSec']} items/s vs raw {run['rawBeforeItemsPerSec']} / "
                f"{run['rawAfterItemsPerSec']}: {run['saverOverRaw']}")
        ok = sorted((r for r in runs if r["saverOverRaw"] is not None), key=lambda r: r["saverOverRaw"])
        res = {"runs": runs, "median": ok[len(ok) // 2] if ok else None}
        if not ok:
            res["failed"] = "no run printed its rates; see E-saver-rate-*.txt and logs/"
        self.summary["scenarios"]["E"] = res
        self.save_summary()

    # -- M: bounded memory ---------------------------------------------------------------------------------------

    def scenario_m(self):
        """Its own stack, with eviction after 2 s idle: 10,000 projects opened, edited and left idle, then Redis
        used_memory against before (and again after a second round of 10,000 other projects); then, on a freshly
        started gateway, one ~32 MiB project saved, evicted, loaded and snapshotted by 50 sockets at once, with the
        peak RSS of gateway and saver (VmHWM, reset before each step, and the RSS at the reset)."""
        idle_ms = 2000
        log(f"M: bounded memory (CANVAS_IDLE_EVICT_MS={idle_ms}, SAVE_INTERVAL_MS=500)")
        self.start_servers(saver_env={"CANVAS_IDLE_EVICT_MS": idle_ms, "SAVE_INTERVAL_MS": 500})
        res = {"idleEvictMs": idle_ms}

        def used_memory():
            return int(self.redis_info("memory")["used_memory"])

        def memory_figures():
            return self.saver_metrics().get("memory", {})

        def memory_stats(name):
            """Redis' own breakdown of used_memory (MEMORY STATS), kept in the run folder, and the key count."""
            text = self.redis_cli("MEMORY", "STATS")
            (self.out / f"M-redis-memory-{name}.txt").write_text(text + "\n")
            return int(self.redis_cli("DBSIZE"))

        def wait_resident(count, timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if memory_figures().get("residentProjects") == count:
                    return True
                time.sleep(0.5)
            return False

        time.sleep(1.0)
        res["usedMemoryBeforeBytes"] = before = used_memory()
        res["keysBefore"] = memory_stats("before")
        projects = 10_000
        report, _ = self.run_loadgen(
            "M-open-edit",
            ["--url", self.url(1), "--projects", projects, "--clients", 1, "--rate", 1, "--objects", 1,
             "--duration", 3, "--warmup", 0, "--connect-timeout", 20, "--project-prefix", "idle-m"],
            timeout=240,
        )
        res["connectionsHeld"] = report["connections"]["connectionsHeld"]
        res["usedMemoryLoadedBytes"] = loaded = used_memory()
        res["keysLoaded"] = memory_stats("loaded")
        res["residentAfterLoad"] = memory_figures().get("residentProjects")
        res["bytesPerResidentProject"] = round((loaded - before) / max(res["residentAfterLoad"] or 1, 1))
        started = time.monotonic()
        res["allEvicted"] = wait_resident(0, 240)
        res["evictionSecs"] = round(time.monotonic() - started, 1)
        time.sleep(1.0)
        res["usedMemoryAfterBytes"] = after = used_memory()
        res["keysAfter"] = memory_stats("after")
        res["afterOverBefore"] = round(after / before, 3)
        res["evictions"] = memory_figures().get("evictions")
        log(f"  M: used_memory {before} -> {loaded} with {res['residentAfterLoad']} resident "
            f"({res['bytesPerResidentProject']} B each) -> {after} after evicting ({res['afterOverBefore']}x before, "
            f"{res['evictionSecs']} s)")
        # The same again with 10,000 other projects: is what stays after an eviction a high-water mark or does it
        # grow with every round?
        self.run_loadgen(
            "M-open-edit-2",
            ["--url", self.url(1), "--projects", projects, "--clients", 1, "--rate", 1, "--objects", 1,
             "--duration", 3, "--warmup", 0, "--connect-timeout", 20, "--project-prefix", "idle-m2"],
            timeout=240,
        )
        res["secondRoundAllEvicted"] = wait_resident(0, 240)
        time.sleep(1.0)
        res["usedMemoryAfterSecondRoundBytes"] = second = used_memory()
        res["keysAfterSecondRound"] = memory_stats("after-second-round")
        res["afterSecondRoundOverBefore"] = round(second / before, 3)
        log(f"  M: after a second round of {projects} projects: used_memory {second} "
            f"({res['afterSecondRoundOverBefore']}x before)")

        # One big project: ~31.6 MiB of objects, written over the Object API, saved by the saver.
        # loadgen names its projects <prefix>-<n>: its 50 sockets below join big-m-0.
        big = "big-m-0"
        pad = "x" * 64_900
        # A fresh gateway for it: the one that held 10,000 sockets keeps that memory in its allocator, which would
        # be counted in the big project's peak (or reused by it, hiding what the project costs).
        self.restart_gateway(1)
        gateway, saver = self.roles["gateway1"], self.roles["saver"]

        baselines = {}

        def reset_peaks():
            # The peak restarts from the current RSS, which still holds what earlier steps left in the allocator
            # (the gateway held 10,000 sockets just before): the RSS at the reset is kept to tell the step's growth.
            for who, pid in (("gateway", gateway), ("saver", saver)):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                baselines[who] = proc_status(pid, "VmRSS")

        def peaks():
            out = {}
            for who, pid in (("gateway", gateway), ("saver", saver)):
                out[f"{who}VmHwmKiB"] = hwm = proc_status(pid, "VmHWM")
                out[f"{who}RssAtStartKiB"] = baselines.get(who)
                out[f"{who}GrowthKiB"] = hwm - baselines[who] if hwm and baselines.get(who) else None
            return out

        reset_peaks()
        url = f"http://127.0.0.1:{self.gw_ports[0]}/api/projects/{big}/objects"
        for i in range(500):
            body = json.dumps({"id": f"o{i}", "type": "blob", "pad": pad}).encode()
            req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 201, r.status
        saved = self.wait_saved(timeout=120)
        figures = memory_figures()
        res["bigProjectBytes"] = next((p["bytes"] for p in figures.get("biggestProjects", [])
                                       if p["projectId"] == big), None)
        res["written"] = {**peaks(), "saved": saved}
        res["bigEvicted"] = wait_resident(0, 60)
        reset_peaks()
        report, _ = self.run_loadgen(
            "M-snapshot",
            ["--url", self.url(1), "--projects", 1, "--clients", 50, "--rate", 0, "--objects", 0,
             "--duration", 5, "--warmup", 0, "--connect-timeout", 20, "--connect-concurrency", 50,
             "--project-prefix", "big-m"],
            timeout=120,
        )
        res["loadedAndSnapshotted"] = {**peaks(), "connectionsHeld": report["connections"]["connectionsHeld"],
                                       "connectFailures": report["connections"]["connectFailures"],
                                       "connectSecs": report["durations"]["connectSecs"]}
        size_kib = (res["bigProjectBytes"] or 0) / 1024
        for step in ("written", "loadedAndSnapshotted"):
            for who in ("gateway", "saver"):
                hwm = res[step][f"{who}VmHwmKiB"]
                res[step][f"{who}OverProject"] = round(hwm / size_kib, 2) if hwm and size_kib else None
                growth = res[step][f"{who}GrowthKiB"]
                res[step][f"{who}GrowthOverProject"] = round(growth / size_kib, 2) if growth and size_kib else None
        log(f"  M: one {size_kib / 1024:.1f} MiB project: written+saved peak RSS gateway "
            f"{res['written']['gatewayVmHwmKiB']} KiB, saver {res['written']['saverVmHwmKiB']} KiB; loaded and "
            f"snapshotted by {res['loadedAndSnapshotted']['connectionsHeld']} sockets: gateway "
            f"{res['loadedAndSnapshotted']['gatewayVmHwmKiB']} KiB, saver {res['loadedAndSnapshotted']['saverVmHwmKiB']} KiB")
        self.summary["scenarios"]["M"] = res
        self.save_summary()
        return res

    # -- the run ------------------------------------------------------------------------------------------------------

    def machine(self):
        def cmd(*a):
            try:
                return subprocess.run(a, capture_output=True, text=True, timeout=10).stdout.strip()
            except Exception as e:
                return f"({e})"

        cpu_model = ""
        try:
            cpu_model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                             if line.startswith("model name"))
        except Exception:
            pass
        mem_kb = proc_meminfo("MemTotal")
        return {
            "cpus": os.cpu_count(),
            "cpuModel": cpu_model,
            "memGiB": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
            "kernel": platform.release(),
            "rustc": cmd("rustc", "--version"),
            "redis": cmd("redis-server", "--version"),
            "node": cmd("node", "--version"),
            "gitHead": cmd("git", "-C", str(ROOT), "rev-parse", "HEAD"),
            "gitDirtyFiles": cmd("git", "-C", str(ROOT), "status", "--short").splitlines(),
            "build": "cargo build --release (profile.release defaults: opt-level 3, no LTO, "
                     "codegen-units 16, debug symbols off, not stripped)",
            "layout": "everything on this one machine: redis-server, dynalite (node), saver, 2 gateways, loadgen, "
                      "redis-benchmark and perf share its cores",
            "loadavgAtStart": open("/proc/loadavg").read().split()[:3],
            "gatewayBin": str(GATEWAY_BIN),
            "gatewayEnvExtra": GATEWAY_ENV_EXTRA,
        }

    def run(self):
        self.summary["startedAt"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.summary["machine"] = self.machine()
        self.save_summary()
        log(f"results in {self.out}")
        self.summary["backgroundBusyCoresAtStart"] = wait_quiet()
        self.start_servers()
        self.summary["ports"] = {"redis": self.redis_port, "dynalite": self.dynalite_port,
                                 "saverHttp": self.saver_http, "gateways": self.gw_ports}
        plan = [("G", self.scenario_g), ("D", self.scenario_d), ("A", self.scenario_a), ("B", self.scenario_b),
                ("C", self.scenario_c)]
        if BASELINE_GATEWAY_BIN:
            plan.append(("W", self.scenario_w))
        if self.profile:
            plan.append(("P", self.scenario_p))
        for letter, fn in plan:
            if not self.want(letter):
                continue
            if elapsed() > HARD_LIMIT_S - 60:
                self.summary["notes"].append(f"{letter}: skipped, time budget used up")
                continue
            try:
                fn()
            except Abort:
                raise
            except Exception as e:
                log(f"{letter} FAILED: {e}")
                self.summary["scenarios"][letter] = {"failed": str(e)}
                self.save_summary()
        # Rate runs its own redis-server and dynalite: stop ours first so that they have the machine to themselves.
        self.procs.stop_all()
        self.roles = {}
        # M and E run their own servers, one after the other.
        for letter, fn in (("M", self.scenario_m), ("E", self.scenario_e), ("S", self.scenario_s)):
            if not self.want(letter) or elapsed() >= HARD_LIMIT_S - 60:
                continue
            try:
                fn()
            except Abort:
                raise
            except Exception as e:
                log(f"{letter} FAILED: {e}")
                self.summary["scenarios"][letter] = {"failed": str(e)}
            self.procs.stop_all()
            self.roles = {}
        try:
            (self.out / "redis").rmdir()  # redis-server's --dir; empty without persistence
        except OSError:
            pass
        self.summary["totalSecs"] = round(elapsed(), 1)
        self.save_summary()
        (self.out / "summary.md").write_text(summary_md(self.summary))
        write_chart(self.out)
        log(f"done in {elapsed():.0f} s; summary: {self.out / 'summary.md'}")


# ---------------------------------------------------------------------------------------------------------------
# analysis helpers


def wait_quiet(limit=0.3, max_wait=120.0):
    """The machine is shared: wait (bounded) until other work uses < `limit` cores over 2 s; returns what it saw."""
    end = time.monotonic() + max_wait
    while True:
        t0, i0 = machine_ticks()
        time.sleep(2.0)
        t1, i1 = machine_ticks()
        busy = round(2 * (1 - (i1 - i0) / max(t1 - t0, 1)), 2)
        if busy < limit or time.monotonic() > end:
            log(f"background load before starting: {busy} cores busy")
            return busy
        log(f"waiting for the machine to go quiet ({busy} cores busy with other work)")


def safe(fn):
    try:
        return fn()
    except Exception:
        return None


def proc_threads(pid):
    return proc_status(pid, "Threads")


def proc_meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def amplification(report, m0, m1, polls, objects):
    """Items the saver wrote per pass during B vs the ideal (every object changes in every interval)."""
    seen = {}
    for _t, m in polls + [(0, m1)]:
        for s in m["autoSave"]["recentSaves"]:
            seen[(s["at"], s["projects"], s["objects"])] = s
    before = {(s["at"], s["projects"], s["objects"]) for s in m0["autoSave"]["recentSaves"]}
    passes = sorted((s for k, s in seen.items() if k not in before), key=lambda s: s["at"])
    d = report["durations"]
    send_start = report["_launchedAtMs"] + d["connectSecs"] * 1000
    send_end = send_start + (d["warmupSecs"] + d["measuredSecs"]) * 1000
    rows = []
    for s in passes:
        claim = s["at"] - s["durationMs"]
        # Passes that found nothing are not listed, so the interval is the timer's (the loop ticks every interval).
        start = claim - SAVE_INTERVAL_MS
        full = start >= send_start and claim <= send_end
        overlap = max(0.0, min(claim, send_end) - max(start, send_start)) / 1000
        rows.append({**s, "claimAtMs": claim, "intervalUnderLoadSecs": round(overlap, 2), "fullInterval": full})
    for r in rows:
        # Distinct objects expected to change in the interval: every object is equally likely per edit
        # (1,000 edits/s over `objects`), plus the creates at the start (counted as load).
        edits = r["intervalUnderLoadSecs"] * 1000
        r["idealEstimate"] = round(objects * (1 - (1 - 1 / objects) ** edits), 1)
    steady = [r for r in rows if r["fullInterval"]]
    items = sum(r["objects"] for r in steady)
    ideal = objects * len(steady)
    return {
        "objectsInB": objects,
        "saveIntervalMs": SAVE_INTERVAL_MS,
        "passes": rows,
        "steadyPasses": len(steady),
        "steadyItems": items,
        "steadyIdeal": ideal,
        "amplification": round(items / ideal, 3) if ideal else None,
        "itemsDuringB": m1["autoSave"]["totalObjectsSaved"] - m0["autoSave"]["totalObjectsSaved"],
        "idealEstimateAllPasses": round(sum(r["idealEstimate"] for r in rows), 1),
        "amplificationAllPasses": round(sum(r["objects"] for r in rows) / sum(r["idealEstimate"] for r in rows), 3)
        if rows and sum(r["idealEstimate"] for r in rows) else None,
        "editsAckedInB": report["edits"]["acked"],
        "editsPerItemWritten": round(report["edits"]["sentIncludingWarmup"] /
                                     max(1, sum(r["objects"] for r in rows)), 1),
        "passesDuringB": len(rows),
        "failedDuringB": m1["autoSave"]["failedSaves"] - m0["autoSave"]["failedSaves"],
        "retriesDuringB": m1["autoSave"]["retries"] - m0["autoSave"]["retries"],
        "lostLeasesDuringB": m1["autoSave"]["lostLeases"] - m0["autoSave"]["lostLeases"],
    }


def prom_delta(a, b):
    """Counter deltas between two Prometheus text scrapes (the saver's), for the series that moved."""
    def parse(t):
        out = {}
        for line in t.splitlines():
            if line.startswith("#") or not line.strip() or "_bucket{" in line:
                continue
            try:
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
            except ValueError:
                pass
        return out
    pa, pb = parse(a), parse(b)
    return {k: round(v - pa.get(k, 0.0), 3) for k, v in pb.items() if v != pa.get(k, 0.0)}


def perf_report(perf, data, args):
    r = subprocess.run([perf, "report", "-i", str(data), "--stdio", *args], capture_output=True, text=True,
                       timeout=300)
    return r.stdout


PCT_LINE = re.compile(r"^\s*([\d.]+)%\s+(.*)$")


def by_process(perf, data, pid_roles):
    """Share of all cpu-clock samples (both cores; idle = the swapper, pid 0) per process, named by role."""
    r = subprocess.run([perf, "script", "-i", str(data), "-F", "pid,comm"], capture_output=True, text=True,
                       timeout=300)
    counts, comms = {}, {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            pid = int(parts[-1])
        except ValueError:
            continue
        counts[pid] = counts.get(pid, 0) + 1
        comms.setdefault(pid, parts[0])
    total = sum(counts.values()) or 1
    roles = {}
    for pid, n in counts.items():
        role = pid_roles.get(pid) or ("idle" if pid == 0 else f"other:{comms.get(pid)}")
        roles[role] = roles.get(role, 0) + n
    return {"percentOfBothCores": {k: round(v * 100 / total, 1) for k, v in sorted(roles.items(), key=lambda kv: -kv[1])},
            "samples": total}


CATEGORIES = [
    ("kernel: TCP/loopback, epoll, futex, scheduling", r"^\[kernel"),
    ("JSON (serde_json)", r"serde_json|serde::|ryu|itoa"),
    ("WebSocket framing (tungstenite, masking, UTF-8 check)", r"tungstenite|axum::extract::ws|apply_mask|utf8|from_utf8"),
    ("Redis client (redis crate: RESP encode/parse, pub/sub)", r"redis::|combine::"),
    ("Lua (redis-server scripting)", r"lua|Lua"),
    ("allocation (malloc/free/realloc)", r"malloc|_int_free|\bfree\b|cfree|realloc|calloc|__rust_alloc|__rust_dealloc|__rdl_|alloc::raw_vec|tcache|jemalloc|je_"),
    ("memcpy/memmove/memset", r"memcpy|memmove|memset|memchr|__memc|strlen"),
    ("tokio runtime (scheduler, mpsc, timers, I/O driver)", r"tokio::|mio::"),
    ("tracing / metrics", r"tracing|prometheus|opentelemetry"),
    ("hashing / locks", r"hashbrown|core::hash|sip|parking_lot|std::sync|futex|pthread_mutex"),
    ("hyper / http", r"hyper::|http::|h2::"),
    ("gateway + shared code", r"canvas_gateway|canvas_shared|canvas_loadgen|loadgen::"),
    ("futures / async glue", r"futures_|core::future|async_trait"),
    ("hdrhistogram / rand", r"hdrhistogram|rand"),
]


def categorize(flat):
    """Sums a perf --sort dso,sym report into cost categories (self time, % of this process' samples)."""
    rows = []
    for line in flat.splitlines():
        m = PCT_LINE.match(line)
        if not m:
            continue
        pct = float(m.group(1))
        rest = m.group(2)
        parts = rest.split(None, 1)
        if len(parts) < 2:
            continue
        dso, sym = parts[0], parts[1]
        sym = re.sub(r"^\[[.kgu]\]\s*", "", sym)
        rows.append((pct, dso, sym))
    total = sum(r[0] for r in rows) or 1.0
    cats = {}
    for pct, dso, sym in rows:
        name = "other"
        if dso.startswith("[kernel"):
            name = CATEGORIES[0][0]
        else:
            for cname, rx in CATEGORIES[1:]:
                if re.search(rx, sym):
                    name = cname
                    break
            else:
                if "redis-server" in dso or "redis-check" in dso:
                    name = "redis-server (commands, networking)"
                elif "libc" in dso:
                    name = "libc other"
        cats[name] = cats.get(name, 0) + pct * 100 / total
    return {k: round(v, 1) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])}


def inclusive(txt):
    """Top entries of perf report --children --sort sym: (children %, self %, symbol)."""
    out = []
    for line in txt.splitlines():
        m = re.match(r"^\s*([\d.]+)%\s+([\d.]+)%\s+\[[.k]\]\s+(.*)$", line)
        if m:
            out.append({"children": float(m.group(1)), "self": float(m.group(2)), "sym": m.group(3).strip()[:200]})
    return out[:80]


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def summary_md(s):
    """A readable digest of summary.json (docs/benchmarks.md quotes one run's digest)."""
    sc = s["scenarios"]
    L = [f"# Bench run {s.get('startedAt')}", ""]
    m = s.get("machine", {})
    L.append(f"Machine: {m.get('cpus')} cores ({m.get('cpuModel')}), {m.get('memGiB')} GiB, kernel "
             f"{m.get('kernel')}; {m.get('layout')}. {m.get('rustc')}; git {str(m.get('gitHead', ''))[:10]} "
             f"+{len(m.get('gitDirtyFiles', []))} uncommitted files. Release build. Background load at start: "
             f"{s.get('backgroundBusyCoresAtStart')} cores. Total {s.get('totalSecs')} s.")
    L.append("")

    def cpu_cols(c):
        others = c.get("others_cores")
        return (f"{c.get('redis', 0):.2f} | {c.get('gateway1', 0) + c.get('gateway2', 0):.2f} | "
                f"{c.get('loadgen', 0):.2f} | {c.get('machine_busy_of_2_cores', 0):.2f} | "
                f"{'–' if others is None else f'{others:.2f}'}")

    g = sc.get("G", {}).get("runs", {})
    if g:
        L += ["## G: redis-benchmark of the edit script", "",
              "| run | EVALSHA/s | µs/call inside Redis | p50 ms | p99 ms | Redis cores | others cores |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for label, r in g.items():
            lat = r.get("latencyMs") or {}
            L.append(f"| {label} | {fmt(r.get('opsPerSec'), 0)} | {r.get('redisUsecPerCall')} | {lat.get('p50')} | "
                     f"{lat.get('p99')} | {r['cpu'].get('redis')} | {r['cpu'].get('others_cores')} |")
        L.append("")
    rows = [(k, sc[k]) for k in ("A", "B") if "fanoutMs" in sc.get(k, {})]
    if rows:
        L += ["## A, B: steady load", "",
              "| | edits/s (target) | fan-out p50 / p95 / p99 / max ms | ack p50 / p99 ms | errors | missing "
              "receipts | seq gaps | Redis cores | gateways cores | loadgen cores | busy cores | others cores |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for k, r in rows:
            f, a = r["fanoutMs"], r["ackMs"]
            L.append(f"| {k} | {fmt(r['achievedEditsPerSec'])} ({fmt(r['targetEditsPerSec'], 0)}) | {f['p50']} / "
                     f"{f['p95']} / {f['p99']} / {f['max']} | {a['p50']} / {a['p99']} | {r['errors']} | "
                     f"{r['receipts']['missing']} | {r['seq']['gaps']} | {cpu_cols(r['cpu'])} |")
        L.append("")
    c = sc.get("C")
    if c and "steps" in c:
        L += ["## C: ramp (20 projects × 5 clients)", "",
              f"Highest sustained: **{fmt(c.get('highestSustainedEditsPerSec'))} edits/s** at "
              f"{c.get('atRatePerClient')}/client; ratio to G c50 {c.get('ratioToScript_c50')}, to G P16 "
              f"{c.get('ratioToScript_c50_P16')}. First failure: {c.get('firstFailure')}.", "",
              "| per client | target | achieved | fan-out p50 / p99 ms | ack p50 / p99 ms | µs/EVALSHA | Redis "
              "cores | gateways cores | loadgen cores | busy cores | others cores | verdict |",
              "| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for st in c["steps"]:
            f, a = st["fanoutMs"], st["ackMs"]
            L.append(f"| {st['ratePerClient']} | {fmt(st['targetEditsPerSec'], 0)} | {fmt(st['achievedEditsPerSec'])} | "
                     f"{f['p50']} / {f['p99']} | {a['p50']} / {a['p99']} | "
                     f"{st['cpu'].get('redis_evalsha_usec_per_call')} | {cpu_cols(st['cpu'])} | "
                     f"{'ok' if st['passed'] else '; '.join(st['failedBecause'])} |")
        L.append("")
    w = sc.get("W")
    if w and "C" in w:
        wb, wc = w["B"], w["C"]
        L += [f"## W: the baseline gateway ({w['gatewayBin']}) under the same load", "",
              f"B: {fmt(wb.get('achievedEditsPerSec'))} edits/s, fan-out p99 {wb['fanoutMs']['p99']} ms, Redis CPU "
              f"{wb.get('redisCpuUsPerEdit')} µs per edit. C: highest sustained "
              f"{fmt(wc.get('highestSustainedEditsPerSec'))} edits/s; the measured gateway's C over this: "
              f"{w.get('sustainedRatioCOverBaseline')}.", "",
              "| per client | achieved | fan-out p99 ms | Redis µs per edit | verdict |", "| ---: | ---: | ---: | ---: | --- |"]
        for st in wc["steps"]:
            L.append(f"| {st['ratePerClient']} | {fmt(st['achievedEditsPerSec'])} | {st['fanoutMs']['p99']} | "
                     f"{st.get('redisCpuUsPerEdit')} | {'ok' if st['passed'] else '; '.join(st['failedBecause'])} |")
        L.append("")
    d = sc.get("D")
    if d and "rssBeforeKiB" in d:
        L += ["## D: idle connections on one gateway", "",
              f"{d['connectionsHeld']} of {d['connectionsPlanned']} held (connect {d['connectSecs']} s); VmRSS "
              f"before {fmt(d['rssBeforeKiB'])} KiB, while holding {fmt(d['rssHeldMedianKiB'])} KiB (median; max "
              f"{fmt(d['rssHeldMaxKiB'])}), after close {fmt(d['rssAfterCloseKiB'])} KiB: "
              f"{d['rssPerConnectionKiB']} KiB per connection.", ""]
    e = sc.get("E")
    if e and e.get("runs"):
        L += ["## E: saver rate", "", "| run | raw before items/s | saver items/s | raw after items/s | saver/raw |",
              "| --- | ---: | ---: | ---: | ---: |"]
        for i, r in enumerate(e["runs"], 1):
            L.append(f"| {i} | {fmt(r['rawBeforeItemsPerSec'], 0)} | {fmt(r['saverItemsPerSec'], 0)} | "
                     f"{fmt(r['rawAfterItemsPerSec'], 0)} | {r['saverOverRaw']} |")
        L.append("")
    m = sc.get("M")
    if m and "usedMemoryAfterBytes" in m:
        L += ["## M: bounded memory", "",
              f"Redis used_memory {fmt(m['usedMemoryBeforeBytes'], 0)} B before, {fmt(m['usedMemoryLoadedBytes'], 0)} B "
              f"with {m['residentAfterLoad']} projects resident ({m['bytesPerResidentProject']} B each), "
              f"{fmt(m['usedMemoryAfterBytes'], 0)} B after evicting them in {m['evictionSecs']} s: "
              f"**{m['afterOverBefore']}x** before (keys {m.get('keysBefore')} / {m.get('keysLoaded')} / "
              f"{m.get('keysAfter')}); after a second round of as many other projects "
              f"{fmt(m.get('usedMemoryAfterSecondRoundBytes'), 0)} B ({m.get('afterSecondRoundOverBefore')}x).", "",
              f"One project of {fmt((m.get('bigProjectBytes') or 0) / 1048576)} MiB, peak RSS (KiB; x project; "
              f"growth over the RSS at the step's start):", "",
              "| step | gateway | saver |", "| --- | ---: | ---: |"]
        for step in ("written", "loadedAndSnapshotted"):
            r = m.get(step) or {}
            cells = [f"{fmt(r.get(f'{w}VmHwmKiB'), 0)} ({r.get(f'{w}OverProject')}x; +{fmt(r.get(f'{w}GrowthKiB'), 0)}, "
                     f"{r.get(f'{w}GrowthOverProject')}x)" for w in ("gateway", "saver")]
            L.append(f"| {step} | {cells[0]} | {cells[1]} |")
        L.append("")
    f = sc.get("F")
    if f and "amplification" in f:
        L += ["## F: write amplification during B", "",
              f"Full-interval passes: {f['steadyPasses']}, items {f['steadyItems']} vs ideal {f['steadyIdeal']}: "
              f"**{f['amplification']}**. All {f['passesDuringB']} passes: {f['itemsDuringB']} items vs ideal "
              f"estimate {f['idealEstimateAllPasses']}: {f['amplificationAllPasses']}. "
              f"{f['editsPerItemWritten']} edits per item written. Saver counters during B: "
              f"{f.get('prometheusDeltaDuringB')}.", ""]
    p = sc.get("P")
    if p and "byProcess" in p:
        L += ["## P: profile", "", f"% of both cores by process: {p['byProcess']['percentOfBothCores']}", ""]
        for k in ("gateway1Categories", "gateway2Categories", "redisCategories", "loadgenCategories"):
            if k in p:
                L.append(f"- {k} (self time, % of the process): {p[k]}")
        L.append("")
    for n in s.get("notes", []):
        L.append(f"- note: {n}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# the chart of a run (plain SVG, so that it needs no package)

CHART_FILE = "fanout-latency.svg"


def fanout_chart_svg(s):
    """Fan-out latency (p50, p95, p99) against achieved edits/s over the ramp (C), on a log scale."""
    steps = sorted(s.get("scenarios", {}).get("C", {}).get("steps", []), key=lambda st: st["achievedEditsPerSec"])
    steps = [st for st in steps if st["fanoutMs"].get("p99") is not None]
    if not steps:
        return None
    width, height, left, right, top, bottom = 760, 440, 70, 150, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    x_max = max(2000, -(-max(st["achievedEditsPerSec"] for st in steps) // 2000) * 2000)
    y_lo, y_hi = 0.1, 1000.0

    def x(v):
        return left + plot_w * v / x_max

    def y(ms):
        ms = min(max(ms, y_lo), y_hi)
        return top + plot_h * (math.log10(y_hi) - math.log10(ms)) / (math.log10(y_hi) - math.log10(y_lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14" font-weight="bold">Fan-out latency against offered load '
           f'(ramp C, run {s.get("startedAt", "")})</text>']
    for ms in (0.1, 1, 10, 100, 1000):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(ms):.1f}" y2="{y(ms):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y(ms) + 4:.1f}" text-anchor="end">{ms:g}</text>')
    for v in range(0, int(x_max) + 1, 2000):
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(v):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{v:,}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 18}" text-anchor="middle">edits/s achieved '
               f'(20 projects × 5 clients, 2 gateways)</text>')
    out.append(f'<text x="18" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + plot_h / 2})">fan-out latency, ms (log scale)</text>')
    limit = RAMP_P99_LIMIT_MS
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
               f'stroke="#c00" stroke-dasharray="6 4"/>')
    out.append(f'<text x="{left + plot_w + 6}" y="{y(limit) + 4:.1f}" fill="#c00">p99 limit {limit:g} ms</text>')
    series = [("p50", "#1f77b4"), ("p95", "#ff7f0e"), ("p99", "#2ca02c")]
    for i, (key, colour) in enumerate(series):
        points = " ".join(f"{x(st['achievedEditsPerSec']):.1f},{y(st['fanoutMs'][key]):.1f}" for st in steps)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for st in steps:
            fill = colour if st.get("passed") else "white"
            out.append(f'<circle cx="{x(st["achievedEditsPerSec"]):.1f}" cy="{y(st["fanoutMs"][key]):.1f}" r="3.5" '
                       f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>')
        ly = top + 20 + 20 * i
        out.append(f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 34}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}">{key}</text>')
    ly = top + 20 + 20 * len(series)
    out.append(f'<circle cx="{left + plot_w + 22}" cy="{ly}" r="3.5" fill="white" stroke="#444"/>')
    out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}">step failed</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_chart(folder):
    """Writes the chart of the run whose summary.json is in `folder`; returns its path, or None without C data."""
    svg = fanout_chart_svg(json.loads((folder / "summary.json").read_text()))
    if svg is None:
        return None
    (folder / CHART_FILE).write_text(svg)
    return folder / CHART_FILE


# What of a run is committed as the reference (bench/reference/, quoted by docs/benchmarks.md): the summary, the
# chart, the commands and the few raw files the report cites. Everything else stays in the ignored bench/runs/.
REFERENCE_DIR = ROOT / "bench" / "reference"
REFERENCE_FILES = ["summary.json", "summary.md", "B-gateway1-prometheus.txt", "profile/gateway1-inclusive.txt",
                   "profile/gateway1-flat.txt", "profile/gateway2-flat.txt"]


def make_reference(run):
    """Replaces bench/reference/ with the reference files of the run folder `run`, its commands and its chart."""
    if REFERENCE_DIR.exists():
        shutil.rmtree(REFERENCE_DIR)
    for name in REFERENCE_FILES:
        if (run / name).exists():
            (REFERENCE_DIR / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run / name, REFERENCE_DIR / name)
    commands = [f"# {f.stem}\n{f.read_text().strip()}\n" for f in sorted(run.glob("*.cmd"))]
    (REFERENCE_DIR / "commands.txt").write_text("\n".join(commands))
    write_chart(REFERENCE_DIR)
    log(f"reference files of {run} copied to {REFERENCE_DIR}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated scenario letters (G,D,A,B,C,P,M,E,S,W; F comes with B; W needs "
                                   "BENCH_BASELINE_GATEWAY_BIN)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", help="results folder (default bench/runs/<UTC timestamp>)")
    ap.add_argument("--chart", metavar="RUN_DIR", help="only (re)write the chart of a finished run, then exit")
    ap.add_argument("--make-reference", metavar="RUN_DIR",
                    help="only copy a finished run's summary, chart and cited files to bench/reference/, then exit")
    args = ap.parse_args()
    if args.chart:
        log(f"chart: {write_chart(Path(args.chart))}")
        return
    if args.make_reference:
        make_reference(Path(args.make_reference))
        return
    only = None
    if args.only:
        only = {x.strip().upper() for x in args.only.split(",") if x.strip()}
        if "F" in only:
            only.add("B")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out) if args.out else ROOT / "bench" / "runs" / stamp
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    for b in ("gateway", "saver", "loadgen"):
        if not (REL / b).exists():
            sys.exit(f"{REL / b} missing: run scripts/bench (it builds) or cargo build --release --workspace --bins")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # The whole run is bounded: after the hard limit everything is stopped.
    signal.signal(signal.SIGALRM, _on_signal)
    signal.alarm(HARD_LIMIT_S)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    bench = Bench(out, only, profile=not args.no_profile and (only is None or "P" in only))
    code = 0
    try:
        bench.run()
    except Abort as e:
        log(f"aborted: {e}")
        bench.summary["notes"].append(f"aborted: {e}")
        code = 130
    except Exception as e:
        log(f"FAILED: {e!r}")
        bench.summary["notes"].append(f"failed: {e!r}")
        code = 1
    finally:
        signal.alarm(0)
        bench.procs.stop_all()
        bench.save_summary()
    failed = [k for k, v in bench.summary["scenarios"].items() if isinstance(v, dict) and "failed" in v]
    if failed:
        log(f"scenarios that failed: {failed}")
        code = code or 1
    sys.exit(code)


if __name__ == "__main__":
    main()
