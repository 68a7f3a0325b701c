#!/usr/bin/env python3
"""Benchmarks: regenerate docs/BENCHMARKS.md (and bench/results.json) from one run.

    python3 bench/run.py            # the full run (a few minutes)
    python3 bench/run.py --quick    # a short smoke run of everything, numbers not written

Each server under test runs pinned to core 0 and the load generator
(`wechat-push simulate load`) to core 1, so the server has one core, as the
targets assume. Every number in the report comes from this run on this machine.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "target" / "release"
BIN = TARGET / "wechat-push"
BARE = TARGET / "examples" / "bare_axum"
OPEN_CASES = TARGET / "examples" / "open_cases"
BENCH = ROOT / "bench"
VENV_PY = BENCH / ".venv" / "bin" / "python"
APPID = "wxba5fad812f8e6fb9"
KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFH"  # non-canonical, like most real keys
TOKEN = "AAAAA"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def peak_rss_kb(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def write_config(dir_, port, apps=1, workers=16):
    lines = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        "[store]",
        f'url = "sqlite://{dir_}/inbox.db"',
        "[inbox]",
        f"workers = {workers}",
    ]
    for i in range(apps):
        appid = APPID if i == 0 else f"wx{i:016x}"
        lines += [
            "[[apps]]",
            f'appid = "{appid}"',
            'kind = "mini_program"',
            f'token = "{TOKEN}"',
            f'encoding_aes_key = "{KEY}"',
            'mode = "safe"',
            'format = "xml"',
        ]
    path = Path(dir_) / "wechat-push.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """A server process pinned to core 0."""

    def __init__(self, cmd, port, env=None):
        self.port = port
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0"] + [str(c) for c in cmd],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=full_env,
            cwd=ROOT,
        )
        wait_port(port)

    def stop(self):
        rss = peak_rss_kb(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return rss


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def load(url, concurrency, duration, fmt="xml"):
    """`wechat-push simulate load` pinned to core 1; returns its JSON report,
    with the CPU time the load generator used (`generator_cpu_s`)."""
    cmd = [
        "taskset", "-c", "1", str(BIN), "simulate", "load",
        "--url", url, "--token", TOKEN, "--aes-key", KEY, "--appid", APPID,
        "--mode", "safe", "--format", fmt,
        "--concurrency", str(concurrency), "--duration", f"{duration}s", "--json",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not out.stdout.strip():
        raise RuntimeError(f"load failed: {out.stderr}")
    report = json.loads(out.stdout)
    report["generator_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return report


def setup_peers():
    """wechatpy + cryptography + aiohttp in bench/.venv; express + wechat + wechat-crypto + xml2js in bench/node_modules."""
    if not VENV_PY.exists():
        run([sys.executable, "-m", "venv", str(BENCH / ".venv")])
    run([str(VENV_PY), "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements.txt")])
    if shutil.which("npm") is None:
        sys.exit("npm is required for the node peers")
    run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(BENCH)])


def inner_xml(size):
    """A text push whose inner XML body is about `size` bytes (the same as the criterion bench)."""
    head = (
        "<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName>"
        "<FromUserName><![CDATA[o9AgO5Kd5ggOC-bXrbNODIiE3bGY]]></FromUserName>"
        "<CreateTime>1714112445</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA["
    )
    tail = "]]></Content><MsgId>6054768590064713728</MsgId></xml>"
    unit = "你好, wechat-push! "
    content = ""
    while len((head + content + tail).encode()) < size:
        content += unit
    return head + content + tail


def make_cases(path):
    """Safe-mode XML pushes of each size, sealed by `wechat-push crypto`, for every pipeline contender."""
    cases = []
    for size in [300, 2048, 10240, 32768]:
        msg = inner_xml(size)
        enc = subprocess.run(
            [BIN, "crypto", "encrypt", "--aes-key", KEY, "--appid", APPID, "--random", "0123456789abcdef", msg],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        sig = subprocess.run(
            [BIN, "crypto", "sign", "--token", TOKEN, "--timestamp", "1714112445", "--nonce", "415670741", "--encrypt", enc],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        body = f"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
        cases.append({
            "size": size, "inner_bytes": len(msg.encode()), "token": TOKEN, "key": KEY, "appid": APPID,
            "timestamp": "1714112445", "nonce": "415670741", "msg_signature": sig, "body": body,
        })
    Path(path).write_text(json.dumps(cases))


def bench_pipeline_peers(seconds):
    """Per-message cost of opening the same pushes, each contender pinned to core 0, one after another."""
    with tempfile.TemporaryDirectory() as d:
        cases = Path(d) / "cases.json"
        make_cases(cases)
        contenders = [
            ("wechat-push `AppCrypto::open`", [OPEN_CASES, cases, seconds]),
            ("wechatpy `decrypt_message` + `parse_message`", [VENV_PY, BENCH / "peers" / "pipeline.py", cases, seconds]),
            ("node `wechat-crypto` + `xml2js`", ["node", BENCH / "peers" / "pipeline.js", cases, seconds]),
        ]
        rows = []
        for label, cmd in contenders:
            out = subprocess.run(["taskset", "-c", "0"] + [str(c) for c in cmd], capture_output=True, text=True, cwd=BENCH)
            if out.returncode != 0:
                raise RuntimeError(f"{label} failed: {out.stderr}")
            for r in json.loads(out.stdout):
                rows.append({"contender": label, **r})
                log(f"{label} {r['size']} B: {r['ns_per_msg'] / 1000:.2f} µs")
        return rows


def bench_servers(duration, concurrencies):
    results = []
    contenders = [
        ("wechat-push serve (SQLite inbox, fsync on)", "serve"),
        ("bare axum: verify + decrypt, stores nothing (ceiling)", "bare"),
        ("aiohttp + wechatpy (stores nothing)", "aiohttp"),
        ("express + node wechat (stores nothing)", "express"),
    ]
    for label, kind in contenders:
        for c in concurrencies:
            with tempfile.TemporaryDirectory() as d:
                port = free_port()
                config = write_config(d, port)
                if kind == "serve":
                    server = Server([BIN, "serve", "--config", config], port)
                elif kind == "bare":
                    server = Server([BARE, f"127.0.0.1:{port}", config], port)
                elif kind == "aiohttp":
                    server = Server([VENV_PY, BENCH / "peers" / "aiohttp_server.py", port, TOKEN, KEY, APPID], port)
                else:
                    server = Server(["node", BENCH / "peers" / "express_server.js", port, TOKEN, KEY, APPID], port)
                try:
                    cpu_before = cpu_seconds(server.proc.pid)
                    report = load(f"http://127.0.0.1:{port}/wechat/{APPID}", c, duration)
                    cpu_after = cpu_seconds(server.proc.pid)
                finally:
                    rss = server.stop()
                if cpu_before is not None and cpu_after is not None:
                    report["server_cpu_s"] = cpu_after - cpu_before
                stored = None
                if kind == "serve":
                    out = subprocess.run(
                        [BIN, "inbox", "list", "--json", "--limit", "0", "--config", config],
                        capture_output=True, text=True, check=True,
                    )
                    stored = len(out.stdout.splitlines())
                row = {"server": label, "kind": kind, "concurrency": c, "peak_rss_kb": rss, "stored": stored, **report}
                log(f"{label} c={c}: {report['throughput']:.0f}/s p99 {report['p99_ms']:.2f} ms rss {rss} kB")
                results.append(row)
    return results


def bench_apps(duration, counts):
    """Throughput of `serve` with 1, 10, 100 apps configured (load on one of them)."""
    results = []
    for n in counts:
        with tempfile.TemporaryDirectory() as d:
            port = free_port()
            config = write_config(d, port, apps=n)
            server = Server([BIN, "serve", "--config", config], port)
            try:
                report = load(f"http://127.0.0.1:{port}/wechat/{APPID}", 64, duration)
            finally:
                rss = server.stop()
            log(f"{n} apps: {report['throughput']:.0f}/s")
            results.append({"apps": n, "peak_rss_kb": rss, **report})
    return results


def bench_pipeline(quick):
    """Criterion: opening one safe-mode push, by size and format."""
    args = ["cargo", "bench", "-p", "wechat-push", "--bench", "open", "--"]
    if quick:
        args += ["--warm-up-time", "0.5", "--measurement-time", "1"]
    run(args, cwd=ROOT, stdout=subprocess.DEVNULL)
    rows = []
    base = ROOT / "target" / "criterion" / "open_safe_push"
    for fmt in ["xml", "json"]:
        for size in [300, 2048, 10240, 32768]:
            est = base / fmt / str(size) / "new" / "estimates.json"
            data = json.loads(est.read_text())
            rows.append({"format": fmt, "size": size, "median_ns": data["median"]["point_estimate"]})
    return rows


def fmt_us(ns):
    return f"{ns / 1000:.2f} µs"


def render(results):
    p = results["pipeline"]
    s = results["servers"]
    a = results["apps"]
    when = results["when"]
    out = [
        "# Benchmarks",
        "",
        f"Generated by `python3 bench/run.py` on {when} on this project's machine "
        f"({results['machine']}). Absolute numbers move with the machine's load; the ratios "
        "compare contenders measured in the same run.",
        "",
        "## Opening one safe-mode push (library, one core)",
        "",
        "`AppCrypto::open` on a push as WeChat sends it in safe mode: verify `msg_signature` (SHA-1) → "
        "base64 → AES-256-CBC → unpad, check length and appid → parse XML or JSON → type it into a "
        "`Message` → its `DedupKey`. Reproduce: `cargo bench -p wechat-push --bench open`.",
        "",
        "| inner body | XML | JSON |",
        "|---|---|---|",
    ]
    by = {(r["format"], r["size"]): r["median_ns"] for r in p}
    for size, label in [(300, "~300 B text message"), (2048, "~2 KB"), (10240, "~10 KB"), (32768, "~32 KB")]:
        out.append(f"| {label} | {fmt_us(by[('xml', size)])} | {fmt_us(by[('json', size)])} |")
    pp = results["pipeline_peers"]
    out += [
        "",
        "### Side by side with the peers (same pushes, same run, one core each)",
        "",
        "Each contender opens the same safe-mode XML pushes (sealed by `wechat-push crypto`, a "
        "non-canonical EncodingAESKey): verify the signature, decrypt, parse. wechat-push also "
        "checks every padding byte and the declared length, and types the message; wechatpy "
        "checks the appid but neither padding nor length; node `wechat-crypto` checks neither the "
        "appid nor the padding (an out-of-range pad byte is taken as 0).",
        "",
        "| inner body | wechat-push | wechatpy | node wechat-crypto + xml2js | vs wechatpy | vs node |",
        "|---|---|---|---|---|---|",
    ]
    def cost(label_start, size):
        return next(r["ns_per_msg"] for r in pp if r["contender"].startswith(label_start) and r["size"] == size)
    for size in [300, 2048, 10240, 32768]:
        ours, py, js = cost("wechat-push", size), cost("wechatpy", size), cost("node", size)
        out.append(
            f"| ~{size} B | {fmt_us(ours)} | {fmt_us(py)} | {fmt_us(js)} | **{py / ours:.0f}×** | **{js / ours:.0f}×** |"
        )
    out += [
        "",
        "## Server: acknowledged pushes (HTTP, server on one core)",
        "",
        "The server is pinned to core 0, the load generator (`wechat-push simulate load`, closed loop, "
        "distinct safe-mode XML pushes, each verified on the answer as WeChat would) to core 1. "
        "`wechat-push serve` (default config, log level info) stores every push durably (SQLite, "
        "WAL, `synchronous=FULL`, group commit) before answering `success`, and its workers handle "
        "each one after; the bare axum handler and the peers verify and decrypt but store nothing. "
        "The peers: a minimal aiohttp server calling wechatpy's `decrypt_message` + `parse_message`, "
        "and an express server with node `wechat`'s middleware answering `res.reply('')` (empty, its "
        "way of acknowledging). One process each: the server has one core.",
        "",
        "| server | concurrency | pushes/s | p50 | p99 | max | errors | peak RSS | server CPU | load generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def busy(r, key):
        # Share of one core over the run: 100% means that side was the limit.
        return f"{100 * r[key] / r['seconds']:.0f}%" if r.get(key) is not None else "?"

    for r in s:
        rss = f"{r['peak_rss_kb'] / 1024:.1f} MB" if r["peak_rss_kb"] else "?"
        out.append(
            f"| {r['server']} | {r['concurrency']} | {r['throughput']:,.0f} | {r['p50_ms']:.2f} ms | "
            f"{r['p99_ms']:.2f} ms | {r['max_ms']:.1f} ms | {r['errors']} | {rss} | "
            f"{busy(r, 'server_cpu_s')} | {busy(r, 'generator_cpu_s')} |"
        )
    out += ["", "Ratios (same run):", ""]
    for c in sorted({r["concurrency"] for r in s}):
        row = {r["kind"]: r for r in s if r["concurrency"] == c}
        serve, bare = row["serve"], row["bare"]
        peers = [row[k] for k in ("aiohttp", "express") if k in row]
        best = max(peers, key=lambda r: r["throughput"]) if peers else None
        line = (
            f"- concurrency {c}: `serve` reaches **{serve['throughput'] / bare['throughput']:.2f}×** the "
            f"bare-axum ceiling while storing every push ({serve['stored']:,} stored, "
            f"{serve['ok']:,} acknowledged)"
        )
        if best:
            mem = min(p["peak_rss_kb"] for p in peers if p["peak_rss_kb"])
            line += (
                f"; **{serve['throughput'] / best['throughput']:.1f}×** the fastest peer "
                f"({best['server'].split(' (')[0]}), with **{serve['peak_rss_kb'] / mem:.2f}×** the "
                "smallest peer's peak memory"
            )
        out.append(line + ".")
    # The issues' targets, judged on this run.
    c64 = {r["kind"]: r for r in s if r["concurrency"] == 64}
    serve64, bare64 = c64["serve"], c64["bare"]
    peer_rows = [r for r in s if r["kind"] in ("aiohttp", "express")]
    fastest_peer = max((r["throughput"] for r in peer_rows), default=0)
    peer_mem = min((r["peak_rss_kb"] for r in peer_rows if r["peak_rss_kb"]), default=0)
    py300, js300, ours300 = cost("wechatpy", 300), cost("node", 300), cost("wechat-push", 300)
    checks = [
        ("pipeline, ~300 B: over 20× wechatpy per message", f"{py300 / ours300:.1f}×", py300 / ours300 > 20),
        ("pipeline, ~300 B: over 20× node wechat-crypto + xml2js", f"{js300 / ours300:.1f}×", js300 / ours300 > 20),
        ("`serve`: over 30,000 pushes/s at concurrency 64", f"{serve64['throughput']:,.0f}/s", serve64["throughput"] > 30000),
        ("`serve`: p99 under 5 ms at concurrency 64", f"{serve64['p99_ms']:.2f} ms", serve64["p99_ms"] < 5),
        ("`serve`: under 50 MB peak RSS", f"{serve64['peak_rss_kb'] / 1024:.1f} MB", serve64["peak_rss_kb"] < 50 * 1024),
        ("`serve`: at least half the bare-axum ceiling", f"{serve64['throughput'] / bare64['throughput']:.2f}×", serve64["throughput"] >= bare64["throughput"] / 2),
    ]
    if fastest_peer:
        checks += [
            ("`serve`: over 5× the fastest peer's throughput", f"{serve64['throughput'] / fastest_peer:.1f}×", serve64["throughput"] > 5 * fastest_peer),
            ("`serve`: under a third of the peers' memory", f"{serve64['peak_rss_kb'] / peer_mem:.2f}×", serve64["peak_rss_kb"] * 3 < peer_mem),
        ]
    out += ["", "## Targets, judged on this run", "", "| target | measured | met |", "|---|---|---|"]
    for target, measured, met in checks:
        out.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    gen_busy = (bare64.get("generator_cpu_s") or 0) / bare64["seconds"]
    note = (
        f"The bare axum handler, which stores nothing, reached {bare64['throughput']:,.0f}/s at "
        f"concurrency 64 with its core {busy(bare64, 'server_cpu_s')} busy and the load generator's "
        f"{busy(bare64, 'generator_cpu_s')}: "
        + ("the load generator, not the handler, was the limit, so the ceiling and the ratios against "
           "it are conservative." if gen_busy > 0.95 else "the handler was the limit.")
    )
    note += (
        f" `serve` used {busy(serve64, 'server_cpu_s')} of its core at concurrency 64."
    )
    if fastest_peer:
        note += (
            f" Five times the fastest peer is {5 * fastest_peer:,.0f}/s, "
            f"{'above' if 5 * fastest_peer > bare64['throughput'] else 'below'} what that handler, "
            "doing less than any contender, shows on this machine in this run."
        )
    out += ["", note]
    out += [
        "",
        "## Server: how cost grows with configured apps",
        "",
        "| apps configured | pushes/s (concurrency 64) | p99 | peak RSS |",
        "|---|---|---|---|",
    ]
    for r in a:
        out.append(
            f"| {r['apps']} | {r['throughput']:,.0f} | {r['p99_ms']:.2f} ms | {r['peak_rss_kb'] / 1024:.1f} MB |"
        )
    out += [
        "",
        "## Reproduce",
        "",
        "```sh",
        "python3 bench/run.py          # writes docs/BENCHMARKS.md and bench/results.json",
        "python3 bench/run.py --quick  # smoke run, prints results, writes nothing",
        "```",
        "",
        "Raw numbers: [`bench/results.json`](../bench/results.json).",
        "",
    ]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run; does not write the report")
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run (default 10)")
    args = ap.parse_args()
    if shutil.which("taskset") is None:
        sys.exit("taskset (util-linux) is required to pin server and load generator to cores")
    duration = 2 if args.quick else args.duration
    started = time.time()
    run(["cargo", "build", "--release", "-p", "wechat-push-cli", "-p", "wechat-push", "--bin", "wechat-push",
         "--example", "bare_axum", "--example", "open_cases"], cwd=ROOT)
    setup_peers()
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "pipeline": bench_pipeline(args.quick),
        "pipeline_peers": bench_pipeline_peers(0.5 if args.quick else 2.0),
        "servers": bench_servers(duration, [16, 64]),
        "apps": bench_apps(max(2, duration // 2), [1, 10, 100]),
    }
    results["seconds"] = round(time.time() - started, 1)
    text = render(results)
    if args.quick:
        (BENCH / "results.quick.json").write_text(json.dumps(results, indent=2) + "\n")
        print(text)
        log(f"quick run done in {results['seconds']} s (nothing written)")
        return
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "BENCHMARKS.md").write_text(text)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote docs/BENCHMARKS.md and bench/results.json in {results['seconds']} s")


if __name__ == "__main__":
    main()
