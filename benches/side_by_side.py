#!/usr/bin/env python3
"""trie and the Python version (tokenspeed-trie), side by side on llama-server.

Same workload, seed, endpoint (a fresh llama-server from ../shared/real-server
for each tool, so both start with a cold cache), concurrency and duration.
Reports each tool's client CPU seconds per completed token (user + system of
the tool's process, from wait4), completion tok/s, cache hit rates, and how
often each missed its prompt length: trie's server-checked mismatches, and
the Python version's "Failed to synthesize prompt" warnings out of its prompt
segments (it logs one for every segment whose text does not re-tokenize to
the asked length).

Not part of CI. Needs the llama-server build and network access to PyPI the
first time (a throwaway venv, default /tmp/trie-py-venv).

    python3 benches/side_by_side.py [--duration 60] [--concurrency 4] [--seed 1]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = os.environ.get("TRIE_REAL_SERVER_KIT", os.path.join(ROOT, "..", "shared", "real-server"))
VENV = os.environ.get("TRIE_PY_VENV", "/tmp/trie-py-venv")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def venv_python():
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(py):
        sh(sys.executable, "-m", "venv", VENV)
    probe = subprocess.run([py, "-c", "import trie.client"], capture_output=True)
    if probe.returncode != 0:
        sh(py, "-m", "pip", "install", "-q", "tokenspeed-trie")
    return py


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class LlamaServer:
    def __init__(self, slots):
        out = sh("bash", os.path.join(KIT, "start.sh"), str(free_port()), str(slots), "tiny",
                 capture_output=True, text=True).stdout.split()
        self.pid, self.url = out[0], out[1]
        with urllib.request.urlopen(self.url + "/models") as r:
            self.model = json.load(r)["data"][0]["id"]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["kill", self.pid])
        time.sleep(1)


def workload(path):
    """The bundled agentic sample, capped so a 2-core CPU engine keeps up."""
    rows = []
    with open(os.path.join(ROOT, "data", "agentic.jsonl")) as f:
        for line in f:
            t = json.loads(line)
            n = min(t["num_turns"], 6)
            rows.append({
                "num_turns": n,
                "input_prompt_length": min(t["input_prompt_length"], 3000),
                "assistant_response_length": [min(x, 40) for x in t["assistant_response_length"][:n]],
                "tool_call_output_length": [min(x, 800) for x in t["tool_call_output_length"][:n]],
                "tool_call_latency": [0.05] * n,
                "final_assistant_response_length": 60,
            })
    with open(path, "w") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")


def run_timed(cmd, **kw):
    """Run `cmd`; return (stdout+stderr, CPU seconds of the process and its children)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[0]} failed:\n{out[-3000:]}")
    return out, ru.ru_utime + ru.ru_stime


def complete_line(text):
    """The key=value figures of the `benchmark complete` line."""
    for line in ANSI.sub("", text).splitlines():
        if "benchmark complete" in line:
            return {k: v for k, v in re.findall(r"(\w+)=([^\s]+)", line)}
    sys.exit("no 'benchmark complete' line:\n" + text[-3000:])


# Runs inside the venv: counts prompt segments, then runs the Python CLI.
PY_DRIVER = r"""
import atexit, sys
import trie.tokenizer_manager as tm
calls = [0]
orig = tm.TokenizerManager.get_prompt
def counted(self, n, **kw):
    if n:
        calls[0] += 1
    return orig(self, n, **kw)
tm.TokenizerManager.get_prompt = counted
atexit.register(lambda: print(f"prompt_segments={calls[0]}", flush=True))
from trie.cli import main
sys.argv = ["trie"] + sys.argv[1:]
main()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    sh("cargo", "build", "--release", "-q", cwd=ROOT)
    py = venv_python()
    tmp = tempfile.mkdtemp(prefix="trie-side-")
    wl = os.path.join(tmp, "workload.jsonl")
    workload(wl)
    tok_dir = os.path.join(tmp, "tokenizer")
    os.makedirs(tok_dir)
    with open(os.path.join(KIT, "tiny", "tokenizer.json")) as src, \
            open(os.path.join(tok_dir, "tokenizer.json"), "w") as dst:
        dst.write(src.read())
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast"}, f)

    rows = []
    with LlamaServer(a.concurrency) as srv:
        out_json = os.path.join(tmp, "trie.json")
        _, cpu = run_timed([
            os.path.join(ROOT, "target", "release", "trie"), "--workload", wl,
            "--endpoint", srv.url, "--model", srv.model, "--tokenizer", tok_dir,
            "--concurrency", str(a.concurrency), "--duration", str(a.duration),
            "--seed", str(a.seed), "--output", out_json, "-q"])
        doc = json.load(open(out_json))
        fig, s = doc["figures"], doc["summary"]
        tokens = s["curve"][-1]["completion"] if s["curve"] else 0
        rows.append(("trie (Rust)", cpu, tokens, fig["completion_tok_per_s"],
                     fig["cache_hit_rate_pct_mean"], fig["eligible_cache_hit_rate_pct_mean"],
                     f"{s['prompt_token_mismatches']} of {s['http_requests']} requests (server-checked)"))
    with LlamaServer(a.concurrency) as srv:
        out, cpu = run_timed([
            py, "-c", PY_DRIVER, f"workload_path={wl}", f"endpoint={srv.url}",
            f"model={srv.model}", f"tokenizer_model={tok_dir}",
            f"concurrency={a.concurrency}", f"duration={a.duration}", f"seed={a.seed}",
            "stream=True"],
            env={**os.environ, "OPENAI_API_KEY": "sk-unused"})
        fig = complete_line(out)
        segments = int(re.search(r"prompt_segments=(\d+)", out).group(1))
        missed = len(re.findall(r"Failed to synthesize prompt", out))
        rate = float(fig.get("completion_tok_per_s", 0))
        tokens = rate * float(fig.get("wall_time_s", 0))
        rows.append(("tokenspeed-trie (Python)", cpu, tokens, rate,
                     float(fig.get("cache_hit_rate_pct_mean", 0)),
                     float(fig.get("eligible_cache_hit_rate_pct_mean", 0)),
                     f"{missed} of {segments} prompt segments"))

    print(f"workload: data/agentic.jsonl capped ({wl}); llama-server tiny, "
          f"{a.concurrency} slots; concurrency {a.concurrency}; {a.duration:.0f} s; seed {a.seed}")
    print("| tool | client CPU s | completed tokens | CPU ms per 1k completed tokens "
          "| completion tok/s | cache hit % (mean) | eligible cache hit % (mean) | prompt length missed |")
    print("|---|---|---|---|---|---|---|---|")
    for name, cpu, tokens, rate, hit, eligible, missed in rows:
        per_k = 1e6 * cpu / tokens if tokens else float("nan")
        print(f"| {name} | {cpu:.2f} | {tokens:.0f} | {per_k:.1f} | {float(rate):.1f} "
              f"| {float(hit):.1f} | {float(eligible):.1f} | {missed} |")


if __name__ == "__main__":
    main()
