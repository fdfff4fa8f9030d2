"""Generate the small sample workloads in this directory (deterministic).

    python3 data/make_samples.py

Shapes follow ../SPEC's description of the published trie traces: office work
(8.7k-9k prompt, 8-64 turns, short answers with rare long ones, tool outputs of
3-15,000 tokens mostly 10-4,000, tool latency 0.15-20 s with a median near
0.5 s, final answers of 380-3,700 tokens); agentic coding (a 2k-12k prompt,
5-30 turns of short tool calls over growing file reads); code QA (a large code
context, 0-4 lookups, a long final answer). They are synthetic: drawn from
these ranges, not sampled from real traces.
"""
import json
import math
import random
from pathlib import Path

HERE = Path(__file__).parent


def lognormal(rng, median, sigma, lo, hi):
    return int(min(hi, max(lo, round(median * math.exp(rng.gauss(0, sigma))))))


def latency(rng, median, lo, hi):
    return round(min(hi, max(lo, median * math.exp(rng.gauss(0, 1.0)))), 3)


def office(rng):
    turns = min(64, max(8, int(rng.gauss(35, 12))))
    answers = [lognormal(rng, 60, 0.9, 7, 250) if rng.random() > 0.04 else rng.randint(500, 3800) for _ in range(turns)]
    tools = [lognormal(rng, 300, 1.3, 3, 15000) for _ in range(turns)]
    return dict(num_turns=turns, input_prompt_length=rng.randint(8700, 9000), assistant_response_length=answers,
                tool_call_output_length=tools, tool_call_latency=[latency(rng, 0.5, 0.15, 20.0) for _ in range(turns)],
                final_assistant_response_length=rng.randint(380, 3700))


def agentic(rng):
    turns = rng.randint(5, 30)
    return dict(num_turns=turns, input_prompt_length=rng.randint(2000, 12000),
                assistant_response_length=[lognormal(rng, 80, 0.7, 20, 400) for _ in range(turns)],
                tool_call_output_length=[lognormal(rng, 600, 1.0, 50, 6000) for _ in range(turns)],
                tool_call_latency=[latency(rng, 0.4, 0.1, 5.0) for _ in range(turns)],
                final_assistant_response_length=rng.randint(100, 1500))


def qa(rng):
    turns = rng.randint(0, 4)
    return dict(num_turns=turns, input_prompt_length=rng.randint(6000, 16000),
                assistant_response_length=[lognormal(rng, 100, 0.5, 50, 300) for _ in range(turns)],
                tool_call_output_length=[lognormal(rng, 900, 0.8, 200, 3000) for _ in range(turns)],
                tool_call_latency=[latency(rng, 0.3, 0.1, 1.0) for _ in range(turns)],
                final_assistant_response_length=rng.randint(300, 1200))


for name, make, n in [("office", office, 32), ("agentic", agentic, 64), ("qa", qa, 64)]:
    rng = random.Random(f"trie-sample-{name}")
    rows = [json.dumps(make(rng), separators=(", ", ": ")) for _ in range(n)]
    (HERE / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
