"""Command line: `python -m dera_demo generate ...` and `python -m dera_demo sweep ...`."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import cast

from tqdm import tqdm

from dera_demo.embedded import ASSETS_DIR
from dera_demo.engine import MAX_NEW_TOKENS, Completion, LiveStrengths, SamplingConfig, stream
from dera_demo.models import PRECISIONS, ModelPair, configure_threads, load_pair
from dera_demo.presets import DEFAULT_PRESET, PRESETS, resolve
from dera_demo.prompts import encode_prompt
from dera_demo.realign import MAX_STRENGTH, MIN_STRENGTH
from dera_demo.sweep import evaluation_section, load_prompts, table, update_card, write_report
from dera_demo.sweep import sweep as run_sweep

HELDOUT = ASSETS_DIR / "prompts" / "heldout.jsonl"
DEFAULT_SCORER = "dera_demo.reward:reward"


def strength_arg(text: str) -> float:
    """A strength as a decimal or a fraction such as 2/3."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"strength must be a number or a fraction like 2/3, got {text!r}"
        ) from None


def _model_args(command: argparse.ArgumentParser) -> None:
    source = command.add_argument_group(
        "models (default: the embedded offline pair; --ref or --aligned replaces one side of it)"
    )
    source.add_argument("--pair", choices=sorted(PRESETS), help="a named pair")
    source.add_argument("--ref", help="reference (SFT) model: hub id or local folder")
    source.add_argument("--aligned", help="aligned model: hub id, local folder or LoRA adapter")
    source.add_argument("--precision", choices=PRECISIONS, default="4bit")
    source.add_argument("--device", help="torch device (default: cuda when present, else cpu)")
    source.add_argument(
        "--two-copies",
        action="store_true",
        help="for a LoRA adapter: keep two copies of the base instead of sharing one",
    )


def _sampling_args(command: argparse.ArgumentParser, max_new_tokens: int) -> None:
    command.add_argument("--system", help="system prompt (chat template only)")
    command.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, help=f"1 to {MAX_NEW_TOKENS}"
    )
    command.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    command.add_argument("--top-p", type=float, default=0.95, help="in (0, 1]; 1 is off")
    command.add_argument("--top-k", type=int, default=50, help="0 is off")
    command.add_argument("--repetition-penalty", type=float, default=1.0, help="1 (off) to 2")
    command.add_argument("--seed", type=int, default=42)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dera_demo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="generate a response at one or more strengths")
    _model_args(gen)
    _sampling_args(gen, 256)
    gen.add_argument(
        "--strength",
        type=strength_arg,
        nargs="+",
        default=[1.0],
        metavar="S",
        help=f"realignment strength(s) λ from {MIN_STRENGTH:g} to {MAX_STRENGTH:g}: "
        "0 = reference model, 1 = aligned model, >1 = stronger than trained",
    )
    gen.add_argument("--prompt", required=True, help="the user message")
    gen.add_argument("--raw", action="store_true", help="do not apply the chat template")
    gen.add_argument("--stop", nargs="*", default=[], help="stop strings")
    gen.add_argument("--json", action="store_true", help="one JSON object per strength per line")

    sweep = commands.add_parser(
        "sweep", help="score outputs across strengths on a validation set, to pick one"
    )
    _model_args(sweep)
    _sampling_args(sweep, 128)
    sweep.add_argument(
        "--strength", type=strength_arg, nargs="+", default=[0.0, 0.5, 1.0, 2.0], metavar="S"
    )
    sweep.add_argument("--prompts", type=Path, default=HELDOUT, help="JSON lines with 'prompt'")
    sweep.add_argument("--limit", type=int, help="use only the first N prompts")
    sweep.add_argument("--samples", type=int, default=3, help="samples per prompt (seeds)")
    sweep.add_argument("--scorer", default=DEFAULT_SCORER, help="reward as module:function")
    sweep.add_argument("--beta", type=float, help="the aligned model's training β, for β/λ")
    sweep.add_argument("--out", type=Path, default=Path("runs/sweep"), help="output folder")
    sweep.add_argument("--card", type=Path, help="write the results into this model card")
    return parser


def _pair_from_args(args: argparse.Namespace) -> ModelPair:
    # --ref and --aligned each replace one side of the named pair (the embedded one by default),
    # so an adapter trained on the embedded reference runs with --aligned alone.
    ref, aligned = args.ref, args.aligned
    if ref is not None and aligned is not None and args.pair is not None:
        raise ValueError(
            f"--pair {args.pair} is unused when both --ref and --aligned are given; drop one"
        )
    if ref is None or aligned is None:
        preset_ref, preset_aligned = resolve(args.pair or DEFAULT_PRESET)
        ref, aligned = ref or preset_ref, aligned or preset_aligned
    shared = False if args.two_copies else None
    return load_pair(ref, aligned, precision=args.precision, device=args.device, shared_base=shared)


def _run(pair: ModelPair, args: argparse.Namespace, config: SamplingConfig) -> list[Completion]:
    prompt_ids = encode_prompt(pair.tokenizer, args.prompt, system=args.system, raw=args.raw)
    completions = [Completion(strength=s) for s in args.strength]
    single_text = len(args.strength) == 1 and not args.json
    start, first = time.perf_counter(), None
    progress = tqdm(total=config.max_new_tokens, desc="tokens", disable=single_text, leave=False)
    for updates in stream(pair, prompt_ids, args.strength, config):
        first = first or time.perf_counter()
        progress.update(1)
        for update in updates:
            completions[update.index].add(update)
            if single_text:
                sys.stdout.write(update.text)
                sys.stdout.flush()
    progress.close()
    elapsed = time.perf_counter() - start
    tokens = sum(len(c.token_ids) for c in completions)
    print(  # noqa: T201 - timings belong on stderr, apart from the output
        f"\n[{tokens} tokens in {elapsed:.2f} s, {tokens / elapsed:.1f} tokens/s, "
        f"first token after {(first or start) - start:.2f} s]",
        file=sys.stderr,
    )
    return completions


def _print(completions: list[Completion], as_json: bool) -> None:
    for c in completions:
        if as_json:
            record = {
                "strength": c.strength,
                "text": c.text,
                "token_ids": c.token_ids,
                "stop_reason": c.stop_reason,
                "ref_log_probs": c.ref_log_probs,
                "aligned_log_probs": c.aligned_log_probs,
            }
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(f"=== strength {c.strength:g} ({c.stop_reason}) ===\n{c.text}\n\n")


def _config(args: argparse.Namespace) -> SamplingConfig:
    return SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        repetition_penalty=args.repetition_penalty,
        stop_strings=tuple(getattr(args, "stop", ())),
    )


def load_scorer(spec: str) -> Callable[[str], float]:
    """A reward function named as "module:function"."""
    module_name, _, function = spec.partition(":")
    try:
        scorer = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"--scorer must name a function as module:function, got {spec!r}"
        ) from error
    return cast(Callable[[str], float], scorer)


def sweep_command(args: argparse.Namespace) -> None:
    config = _config(args)
    LiveStrengths(args.strength)  # checks every strength before the models load
    scorer = load_scorer(args.scorer)
    if not args.prompts.is_file():
        raise ValueError(f"no prompts file at {str(args.prompts)!r}")
    prompts = load_prompts(args.prompts)[: args.limit]
    pair = _pair_from_args(args)
    outputs = run_sweep(
        pair,
        prompts,
        args.strength,
        scorer,
        samples=args.samples,
        config=config,
        system=args.system,
    )
    rows = write_report(outputs, args.out, beta=args.beta)
    if args.card is not None:
        command = "python -m dera_demo " + " ".join(sys.argv[1:] if sys.argv[1:] else ["sweep"])
        update_card(args.card, evaluation_section(rows, outputs, command=command, beta=args.beta))
    sys.stdout.write(table(rows, args.beta) + f"\n\nWritten to {args.out}/sweep.{{json,md,png}}\n")


def generate_command(args: argparse.Namespace) -> None:
    config = _config(args)
    if not args.prompt.strip():
        raise ValueError(f"prompt must be non-empty text, got {args.prompt!r}")
    LiveStrengths(args.strength)  # checks every strength before the models load
    completions = _run(_pair_from_args(args), args, config)
    if len(args.strength) > 1 or args.json:
        _print(completions, args.json)
    else:
        sys.stdout.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        configure_threads()
        (sweep_command if args.command == "sweep" else generate_command)(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    return 0
