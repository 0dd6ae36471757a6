"""λ sweeps: score realigned outputs on a validation set to choose a strength before retraining.

For each prompt and sample, all strengths decode together in one batch with one seed (coupled
sampling), so differences between rows come from the strength, not from luck. Each output is
scored by a reward function, and its per-token KL to the reference model is measured exactly from
the full distributions. A strength λ that scores well suggests retraining once at β/λ.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm import tqdm

from dera_demo.engine import Completion, SamplingConfig, generate
from dera_demo.models import ModelPair
from dera_demo.prompts import encode_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRow:
    """Summary of one strength over every prompt and sample."""

    strength: float
    mean_reward: float
    reward_sem: float  # standard error of the mean reward
    mean_kl: float  # mean per-token KL(realigned || reference), nats
    mean_tokens: float
    outputs: int
    # Mean reward minus that of the previous (lower) strength, taken pair by pair over the same
    # prompt and seed, with its standard error; None for the lowest strength. Coupled sampling
    # makes the paired difference far less noisy than the gap between two means.
    gain: float | None = None
    gain_sem: float | None = None


@dataclass(frozen=True)
class SweepOutput:
    prompt: str
    sample: int
    strength: float
    text: str
    reward: float
    kl: float
    tokens: int


def load_prompts(path: Path) -> list[str]:
    """Prompts from a JSON-lines file with a "prompt" field per line."""
    prompts = [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts


def _sem(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired_gains(outputs: Sequence[SweepOutput], lower: float, upper: float) -> list[float]:
    """Reward at `upper` minus reward at `lower` for every (prompt, sample) that has both."""
    at_lower = {(o.prompt, o.sample): o.reward for o in outputs if o.strength == lower}
    return [
        o.reward - at_lower[o.prompt, o.sample]
        for o in outputs
        if o.strength == upper and (o.prompt, o.sample) in at_lower
    ]


def summarize(outputs: Sequence[SweepOutput]) -> list[SweepRow]:
    rows: list[SweepRow] = []
    for strength in sorted({o.strength for o in outputs}):
        chosen = [o for o in outputs if o.strength == strength]
        rewards = [o.reward for o in chosen]
        gains = paired_gains(outputs, rows[-1].strength, strength) if rows else []
        rows.append(
            SweepRow(
                strength=strength,
                mean_reward=statistics.fmean(rewards),
                reward_sem=_sem(rewards),
                mean_kl=statistics.fmean(o.kl for o in chosen),
                mean_tokens=statistics.fmean(o.tokens for o in chosen),
                outputs=len(chosen),
                gain=statistics.fmean(gains) if gains else None,
                gain_sem=_sem(gains) if gains else None,
            )
        )
    return rows


def _output(prompt: str, sample: int, completion: Completion, score: float) -> SweepOutput:
    kl = statistics.fmean(completion.kls) if completion.kls else 0.0
    return SweepOutput(
        prompt, sample, completion.strength, completion.text, score, kl, len(completion.token_ids)
    )


def sweep(
    pair: ModelPair,
    prompts: Sequence[str],
    strengths: Sequence[float],
    scorer: Callable[[str], float],
    *,
    samples: int = 3,
    config: SamplingConfig | None = None,
    system: str | None = None,
) -> list[SweepOutput]:
    """Generate and score every prompt × sample × strength; sample i uses seed `config.seed + i`."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    config = config or SamplingConfig(max_new_tokens=128)
    outputs = []
    with tqdm(total=len(prompts) * samples, desc="sweep", unit="run") as progress:
        for prompt in prompts:
            prompt_ids = encode_prompt(pair.tokenizer, prompt, system=system)
            for sample in range(samples):
                seeded = replace(config, seed=config.seed + sample)
                for completion in generate(pair, prompt_ids, strengths, seeded):
                    outputs.append(_output(prompt, sample, completion, scorer(completion.text)))
                progress.update(1)
    return outputs


def table(rows: Sequence[SweepRow], beta: float | None = None) -> str:
    """A Markdown table of the sweep; with the training β, the β/λ each strength stands for."""
    head = (
        "| λ | mean reward (± s.e.) | gain over the previous λ (± paired s.e.) "
        "| per-token KL to ref (nats) | mean tokens | outputs |"
    )
    rule = "|---|---|---|---|---|---|"
    if beta is not None:
        head, rule = head + " retrain at β/λ |", rule + "---|"
    lines = [head, rule]
    for r in rows:
        gain = "—" if r.gain is None else f"{r.gain:+.2f} ± {r.gain_sem:.2f}"
        line = (
            f"| {r.strength:g} | {r.mean_reward:.2f} ± {r.reward_sem:.2f} | {gain} | "
            f"{r.mean_kl:.3f} | {r.mean_tokens:.0f} | {r.outputs} |"
        )
        if beta is not None:
            line += f" {beta / r.strength:.3g} |" if r.strength > 0 else " ∞ (the SFT model) |"
        lines.append(line)
    return "\n".join(lines)


def plot(rows: Sequence[SweepRow], path: Path) -> Path:
    """Reward and KL against λ, on two axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strengths = [r.strength for r in rows]
    fig, reward_axis = plt.subplots(figsize=(6, 3.6), dpi=120)
    reward_axis.errorbar(
        strengths,
        [r.mean_reward for r in rows],
        yerr=[r.reward_sem for r in rows],
        marker="o",
        color="tab:red",
        capsize=3,
        label="mean reward",
    )
    reward_axis.set_xlabel("realignment strength λ (0 = SFT, 1 = aligned)")
    reward_axis.set_ylabel("mean reward", color="tab:red")
    kl_axis = reward_axis.twinx()
    kl_axis.plot(strengths, [r.mean_kl for r in rows], marker="s", color="tab:blue")
    kl_axis.set_ylabel("per-token KL to SFT (nats)", color="tab:blue")
    reward_axis.set_title("Reward and divergence across λ")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    outputs: Sequence[SweepOutput], out_dir: Path, *, beta: float | None = None
) -> list[SweepRow]:
    """Write sweep.json (every output), sweep.md (the table) and sweep.png (the plot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(outputs)
    record = {"rows": [asdict(r) for r in rows], "outputs": [asdict(o) for o in outputs]}
    (out_dir / "sweep.json").write_text(json.dumps(record, indent=1, ensure_ascii=False))
    (out_dir / "sweep.md").write_text(table(rows, beta) + "\n")
    plot(rows, out_dir / "sweep.png")
    logger.info("Sweep written to %s", out_dir)
    return rows


def evaluation_section(
    rows: Sequence[SweepRow],
    outputs: Sequence[SweepOutput],
    *,
    command: str,
    beta: float | None = None,
    examples: int = 5,
    example_strengths: Sequence[float] = (0.0, 1.0, 2.0),
) -> str:
    """A model card's `## Evaluation` section: the sweep table and example answers."""
    parts = ["## Evaluation", "", f"`{command}`", "", table(rows, beta), "", "### Examples"]
    prompts = list(dict.fromkeys(o.prompt for o in outputs))[:examples]
    for prompt in prompts:
        parts += ["", f"**{prompt}**", ""]
        for strength in example_strengths:
            match = [
                o for o in outputs if (o.prompt, o.sample, o.strength) == (prompt, 0, strength)
            ]
            if match:
                text = " ".join(match[0].text.split())
                parts.append(f"- λ = {strength:g} (reward {match[0].reward:+.2f}): {text}")
    return "\n".join(parts) + "\n"


def update_card(path: Path, section: str) -> None:
    """Replace (or append) the `## Evaluation` section of a model card."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    head = text[: text.index("## Evaluation")] if "## Evaluation" in text else text + "\n"
    path.write_text(head + section, encoding="utf-8")
