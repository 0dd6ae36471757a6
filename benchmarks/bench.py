"""Speed and memory of realigned decoding against the usual ways of doing it.

    python benchmarks/bench.py            # tiny and embedded pairs, 4-bit and full precision
    python benchmarks/bench.py --quick    # tiny pair only, about a minute

Every configuration runs in its own process (so peak memory and load time are its own), each
timing is the median of --runs runs after a warm-up, and every comparison is a ratio taken inside
one process. Prints Markdown tables and writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dera_demo.engine import SamplingConfig, generate, stream  # noqa: E402
from dera_demo.models import ModelPair, load_pair  # noqa: E402
from dera_demo.prompts import encode_prompt  # noqa: E402

PROMPT = "Explain how a refrigerator keeps food cold, step by step."
RESULTS = ROOT / "benchmarks" / "results"


class RefMixer(LogitsProcessor):
    """The authors' public demo, written out: a logits processor on the aligned model's
    generate() that runs the reference model with its own cache, one strength per call."""

    def __init__(self, pair: ModelPair, strength: float, cached: bool = True) -> None:
        self.pair, self.strength, self.cached = pair, strength, cached
        self.cache = DynamicCache(config=pair.ref.config) if cached else None
        self.seen = 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.cached:
            new = input_ids[:, self.seen :]
            out = self.pair.ref(input_ids=new, cache=self.cache, use_cache=True, logits_to_keep=1)
        else:  # the naive way: rerun the reference on the whole sequence every step
            out = self.pair.ref(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        self.seen = input_ids.shape[1]
        ref = out.logits[:, -1, : self.pair.vocab_size].float()
        mixed = scores.float().clone()
        mixed[:, : self.pair.vocab_size] = ref + self.strength * (mixed[:, : ref.shape[1]] - ref)
        mixed[:, self.pair.vocab_size :] = -torch.inf
        # min_new_tokens sets EOS to -inf in `scores`; 0 * -inf is nan at strength 0.
        return mixed.nan_to_num(nan=-torch.inf)


def timed(fn, runs: int) -> tuple[float, object]:
    """Median seconds of `runs` calls, and the last result (the caller warms up once first)."""
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def own_generate(model, ids: list[int], tokens: int, processor=None) -> list[int]:
    kwargs = {"logits_processor": LogitsProcessorList([processor])} if processor else {}
    out = model.generate(
        torch.tensor([ids], device=model.device),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
        do_sample=False,
        **kwargs,
    )
    return out[0, len(ids) :].tolist()


def engine(pair: ModelPair, ids: list[int], strengths: list[float], tokens: int) -> list[list[int]]:
    config = SamplingConfig(max_new_tokens=tokens, temperature=0.0)
    return [c.token_ids for c in generate(pair, ids, strengths, config)]


def first_token_s(pair: ModelPair, ids: list[int], runs: int) -> float:
    def once() -> None:
        steps = stream(pair, ids, [1.0], SamplingConfig(max_new_tokens=2, temperature=0.0))
        next(steps)
        steps.close()

    return timed(once, runs)[0]


def measure(args: argparse.Namespace) -> dict[str, object]:
    """One configuration, in this process: load, then time every approach."""
    torch.set_num_threads(args.threads)
    ref_dir, aligned_dir = pair_dirs(args.pair)
    start = time.perf_counter()
    pair = load_pair(ref_dir, aligned_dir, precision=args.precision, shared_base=args.shared_base)
    load_s = time.perf_counter() - start
    pair = replace(pair, eos_token_ids=frozenset())  # every run produces exactly its tokens
    ids = encode_prompt(pair.tokenizer, PROMPT)
    n, long_n, runs = args.tokens, args.long_tokens, args.runs
    out: dict[str, object] = {"load_s": load_s, "prompt_tokens": len(ids), "tokens": n}
    weights = [pair.ref] + ([pair.aligned] if pair.aligned is not None else [])
    out["weights_mib"] = sum(m.get_memory_footprint() for m in weights) / 2**20

    two_models = not args.shared_base
    engine(pair, ids, [0.5, 1.0], 8)  # warm-up: allocator, kernels, caches
    if two_models:
        own_generate(pair.ref, ids, 8)
    out["engine_1_s"] = timed(lambda: engine(pair, ids, [0.5], n), runs)[0]
    out["first_token_s"] = first_token_s(pair, ids, runs)
    if two_models:
        out["generate_s"] = timed(lambda: own_generate(pair.ref, ids, n), runs)[0]
    if "scaling" in args.sections:
        for k in (3, 5):
            strengths = [0.0, 0.5, 1.0, 2.0, 3.0][:k]
            out[f"engine_{k}_s"], batched = timed(lambda s=strengths: engine(pair, ids, s, n), runs)
            out[f"sequential_{k}_s"], one_by_one = timed(
                lambda s=strengths: [engine(pair, ids, [x], n)[0] for x in s], runs
            )
            out[f"batch_{k}_agrees"] = batched == one_by_one
    if "approaches" in args.sections and two_models:
        three = [0.0, 0.5, 1.0]
        out["authors_3_s"], authors = timed(
            lambda: [own_generate(pair.aligned, ids, n, RefMixer(pair, s)) for s in three], runs
        )
        out["authors_agree"] = authors == engine(pair, ids, three, n)
        out["generate_long_s"] = timed(lambda: own_generate(pair.ref, ids, long_n), runs)[0]
        out["engine_long_s"] = timed(lambda: engine(pair, ids, [0.5], long_n), runs)[0]
        out["naive_long_s"], naive = timed(
            lambda: own_generate(pair.aligned, ids, long_n, RefMixer(pair, 0.5, cached=False)),
            runs,
        )
        out["naive_agree"] = naive == engine(pair, ids, [0.5], long_n)[0]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    return out


def pair_dirs(kind: str) -> tuple[Path, Path]:
    if kind == "embedded":
        from dera_demo import embedded

        return embedded.reference_dir(), embedded.adapter_dir()
    from dera_demo.testing import build_tiny_pair

    root = Path(tempfile.mkdtemp(prefix="dera-bench-"))
    tiny = build_tiny_pair(root, context=1024)
    return tiny.ref_dir, tiny.adapter_dir if kind == "tiny-adapter" else tiny.aligned_dir


def run_worker(
    args: argparse.Namespace, pair: str, precision: str, shared: bool, sections: list[str]
) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--pair",
        pair,
        "--precision",
        precision,
        "--tokens",
        str(args.tokens),
        "--long-tokens",
        str(args.long_tokens),
        "--runs",
        str(args.runs),
        "--threads",
        str(args.threads),
        "--sections",
        *sections,
    ] + (["--shared-base"] if shared else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"benchmark worker failed: {' '.join(command)}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(pair=pair, precision=precision, shared_base=shared)
    return result


def plan(args: argparse.Namespace) -> list[tuple[str, str, bool, list[str]]]:
    """Which configurations to measure, and how much of each.

    The embedded pair at 4-bit measures speed, first token, memory and load time only: on the
    CPU it is 2-3x slower than fp32, and the full set would take most of an hour.
    """
    configs = []
    for pair in args.pairs:
        for precision in args.precisions:
            for shared in [False, True] if pair != "tiny" else [False]:
                sections = ["scaling", "approaches"]
                if pair == "embedded" and (precision != "none" or shared):
                    sections = ["scaling"] if precision == "none" else ["speed"]
                configs.append((pair, precision, shared, sections))
    return configs


def machine(threads: int) -> dict[str, object]:
    import bitsandbytes
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.read_text().splitlines()
            if ln.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": len(list(Path("/sys/devices/system/cpu").glob("cpu[0-9]*"))),
        "threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "python": platform.python_version(),
        "device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _f(record: dict, key: str, digits: int = 2) -> str:
    value = record.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def _ratio(record: dict, top: str, bottom: str) -> str:
    if record.get(top) is None or record.get(bottom) is None:
        return "–"
    return f"{record[top] / record[bottom]:.2f}"


def tables(results: list[dict], tokens: int, long_tokens: int) -> str:
    """The Markdown report: speed against the other approaches, then batching and memory."""
    lines = [
        f"| pair | precision | path | generate() tok/s | engine λ×1 tok/s | ratio (≥0.45) | "
        f"3 strengths ÷ 1 (≤1.5) | authors' ×3 ÷ engine ×3 (≥2) | naive ÷ engine @{long_tokens} "
        "(≥3) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        path = "shared base" if r["shared_base"] else "two models"
        gen = tokens / r["generate_s"] if r.get("generate_s") else None
        lines.append(
            f"| {r['pair']} | {r['precision']} | {path} | {'–' if gen is None else f'{gen:.1f}'} | "
            f"{tokens / r['engine_1_s']:.1f} | {_ratio(r, 'generate_s', 'engine_1_s')} | "
            f"{_ratio(r, 'engine_3_s', 'engine_1_s')} | {_ratio(r, 'authors_3_s', 'engine_3_s')} | "
            f"{_ratio(r, 'naive_long_s', 'engine_long_s')} |"
        )
    lines += [
        "",
        "| pair | precision | path | λ×1 s | λ×3 batch s | λ×3 one by one s | λ×5 batch s | "
        "λ×5 one by one s | first token s | load s | weights MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        path = "shared base" if r["shared_base"] else "two models"
        lines.append(
            f"| {r['pair']} | {r['precision']} | {path} | {_f(r, 'engine_1_s')} | "
            f"{_f(r, 'engine_3_s')} | {_f(r, 'sequential_3_s')} | {_f(r, 'engine_5_s')} | "
            f"{_f(r, 'sequential_5_s')} | {_f(r, 'first_token_s', 3)} | {_f(r, 'load_s', 1)} | "
            f"{_f(r, 'weights_mib', 0)} | {_f(r, 'peak_rss_mib', 0)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny pair only, about a minute")
    parser.add_argument("--pairs", nargs="+", default=["tiny", "tiny-adapter", "embedded"])
    parser.add_argument("--precisions", nargs="+", default=["4bit", "none"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--long-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--name", default=None, help="results file name (default: from the mode)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--shared-base", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--sections", nargs="*", default=["scaling", "approaches"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args)))
        return
    if args.quick:
        args.pairs, args.precisions, args.tokens, args.long_tokens = (
            ["tiny-adapter"],
            ["none"],
            32,
            128,
        )

    results = []
    for pair, precision, shared, sections in plan(args):
        print(f"measuring {pair} {precision} shared_base={shared} {sections}…", file=sys.stderr)
        started = time.perf_counter()
        results.append(run_worker(args, pair, precision, shared, sections))
        print(f"  took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report = tables(results, args.tokens, args.long_tokens)
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or ("quick" if args.quick else "full")
    payload = {
        "machine": machine(args.threads),
        "settings": vars(args),
        "results": results,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"{name}.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
