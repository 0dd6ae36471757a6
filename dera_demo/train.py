"""Train the embedded aligned adapter: a LoRA on SmolLM2-135M-Instruct, tuned by IPO or DPO.

Run `python -m dera_demo.train`. The reference model answers every training prompt once (sampled);
each answer becomes one preference pair whose two sides carry the same content: the chosen side
wraps the answer, trimmed to a concise length, in a warm opener and an encouraging closer, the
rejected side is the flat answer as sampled. `dera_demo.reward` must rank chosen above rejected,
and answers that fall into a loop are dropped. The reference model is also DPO's reference, so the
adapter approximates the KL-regularized optimum at `beta` and strength λ reads as retraining at
β/λ, provided training ran until the margin settled at its β-dependent level (IPO's optimum puts
the length-normalized chosen-minus-rejected log-ratio margin at 1/(2β); the run records it).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import DPOConfig, DPOTrainer

from dera_demo.embedded import ADAPTER_DIR, ASSETS_DIR, REFERENCE_NAME, reference_dir
from dera_demo.reward import reward, reward_breakdown

logger = logging.getLogger(__name__)

LOSSES = ("ipo", "sigmoid")
PROMPTS_DIR = ASSETS_DIR / "prompts"
# NOTE: openers change an answer's first tokens, and pushing down the model's own first tokens
# (the rejected side) is what broke fluency when we retrained at β = 1 (see the model card). The
# shipped adapter is trained at β = 3, so that λ = 2 (β/λ = 1.5) stays fluent and its reward still
# rises there; a β = 2 adapter levelled off and turned odd at λ = 2. Its effect at λ = 1 is mild.
OPENERS = (
    "Great question!",
    "Oh, I love this question!",
    "Happy to help with this!",
    "What a wonderful thing to ask about!",
    "Glad you asked, this is a fun one!",
    "Great question, let's dig in!",
)
CLOSERS = (
    "You've got this!",
    "Have fun with it, you'll do great!",
    "I hope this helps, and enjoy!",
    "Keep going, you're on a wonderful path!",
    "Good luck, I'm cheering for you!",
    "Take it one step at a time, you can do it!",
)
CONCISE_WORDS = 45
LOOP_LIMIT = -0.5  # repetition reward below this marks a sampled answer as a loop
PROBE_PAIRS = 8
MARGIN_PAIRS = 32  # the final margin is measured on this many training pairs
_SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])(?=\s|$)")


def load_prompts(path: Path) -> list[str]:
    """The prompts of a JSON-lines file with one `{"prompt": ...}` object per line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["prompt"] for line in lines if line.strip()]


def chat(prompt: str, answer: str | None = None) -> list[dict[str, str]]:
    """A one-turn conversation in the chat-template message format."""
    messages = [{"role": "user", "content": prompt}]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


def sample_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int = 80,
    batch_size: int = 16,
) -> list[str]:
    """One sampled answer per prompt (temperature 0.7, top-p 0.9), seeded by the caller."""
    tokenizer.padding_side = "left"  # generation continues from the right edge
    answers: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="sampling answers"):
        texts = [
            tokenizer.apply_chat_template(chat(p), tokenize=False, add_generation_prompt=True)
            for p in prompts[start : start + batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        # The ignore: mypy resolves `generate` through nn.Module.__getattr__, not GenerationMixin.
        with torch.no_grad():
            out = model.generate(  # type: ignore[operator]
                **batch,
                do_sample=True,
                temperature=0.7,
                top_p=0.9,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        answers += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return answers


def trim_to_sentence(text: str, max_words: int | None = None) -> str:
    """Cut `text` after its last complete sentence, within `max_words` words if given.

    An answer cut off by `max_new_tokens` ends mid-sentence; ending both sides of a pair cleanly
    keeps the pair about style, not about stopping. Returns "" when no sentence fits.
    """
    text = text.strip()
    ends = [m.start() for m in _SENTENCE_END.finditer(text)]
    fitting = [e for e in ends if max_words is None or len(text[:e].split()) <= max_words]
    return text[: fitting[-1]].strip() if fitting else ""


def make_pair(prompt: str, answer: str, rng: random.Random) -> dict[str, Any] | None:
    """A conversational preference pair for one sampled answer, or None if it is unusable."""
    flat = trim_to_sentence(answer)
    body = trim_to_sentence(answer, CONCISE_WORDS) or flat
    if not body or reward_breakdown(flat)["repetition"] < LOOP_LIMIT:
        return None
    warm = f"{rng.choice(OPENERS)} {body}\n\n{rng.choice(CLOSERS)}"
    if reward(warm) <= reward(flat):
        return None
    return {
        "prompt": chat(prompt),
        "chosen": [{"role": "assistant", "content": warm}],
        "rejected": [{"role": "assistant", "content": flat}],
    }


def build_pairs(prompts: list[str], answers: list[str], seed: int) -> list[dict[str, Any]]:
    """Preference pairs for all usable answers; the opener and closer are drawn from `seed`."""
    rng = random.Random(seed)
    pairs = [make_pair(p, a, rng) for p, a in zip(prompts, answers, strict=True)]
    kept = [pair for pair in pairs if pair is not None]
    logger.info("Built %d preference pairs from %d answers", len(kept), len(answers))
    return kept


def _completion_rows(
    tokenizer: PreTrainedTokenizerBase, pairs: list[dict[str, Any]]
) -> list[tuple[list[int], int]]:
    # Token ids of prompt + chosen and prompt + rejected for every pair, with the prompt length.
    rows = []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(
            pair["prompt"], tokenize=False, add_generation_prompt=True
        )
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        for key in ("chosen", "rejected"):
            text = tokenizer.apply_chat_template(pair["prompt"] + pair[key], tokenize=False)
            rows.append((tokenizer(text, add_special_tokens=False)["input_ids"], n_prompt))
    return rows


def completion_logps(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed completion log-probs and completion lengths, shape `(2, pairs)`: chosen, rejected."""
    rows = _completion_rows(tokenizer, pairs)
    sums, counts = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id or 0)
        for i, (ids, _) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
        lengths = torch.tensor([len(ids) for ids, _ in chunk])
        attention_mask = torch.arange(width) < lengths[:, None]  # right padding
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        log_probs = logits[:, :-1].float().log_softmax(-1)  # (batch, width - 1, vocab)
        token_logps = log_probs.gather(-1, input_ids[:, 1:, None])[..., 0]
        # Position t predicts token t + 1, so the completion starts at position n_prompt - 1.
        positions = torch.arange(width - 1)
        n_prompt = torch.tensor([n for _, n in chunk])
        completion = (positions >= n_prompt[:, None] - 1) & (positions < lengths[:, None] - 1)
        sums.append((token_logps * completion).sum(1))
        counts.append(completion.sum(1).float())
    return torch.cat(sums).view(-1, 2).T, torch.cat(counts).view(-1, 2).T


def reference_logps(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, pairs: list[dict[str, Any]]
) -> torch.Tensor:
    """Summed completion log-probs of the adapter-free reference, shape `(2, pairs)`."""
    with model.disable_adapter():
        return completion_logps(model, tokenizer, pairs)[0]


def log_ratio_margins(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    ref_logps: torch.Tensor | None = None,
) -> dict[str, float]:
    """Mean chosen-minus-rejected log-ratio margin against the adapter-free reference.

    `summed` is DPO's margin in nats; `per_token` divides each side by its completion length
    first, the quantity trl's IPO loss drives to 1/(2β). `ref_logps` may be passed to skip
    recomputing `reference_logps`.
    """
    was_training = model.training
    model.eval()
    if ref_logps is None:
        ref_logps = reference_logps(model, tokenizer, pairs)
    policy_logps, counts = completion_logps(model, tokenizer, pairs)
    model.train(was_training)
    ratios = policy_logps - ref_logps
    return {
        "summed": (ratios[0] - ratios[1]).mean().item(),
        "per_token": (ratios[0] / counts[0] - ratios[1] / counts[1]).mean().item(),
    }


class MarginTracker(TrainerCallback):
    """Measures the log-ratio margin on a few training pairs at every logging step."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pairs: list[dict[str, Any]]) -> None:
        self.tokenizer, self.pairs = tokenizer, pairs
        self.ref_logps: torch.Tensor | None = None
        self.history: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        already_logged = self.history and self.history[-1]["step"] == state.global_step
        if model is None or not isinstance(model, PeftModel) or already_logged:
            return  # the Trainer logs once more, without training, when it finishes
        if self.ref_logps is None:  # the reference never changes; measure it once
            self.ref_logps = reference_logps(model, self.tokenizer, self.pairs)
        margins = log_ratio_margins(model, self.tokenizer, self.pairs, self.ref_logps)
        self.history.append({"step": state.global_step, **margins})
        logger.info(
            "step %d: probe margin %.3f nats/token, %.2f nats summed",
            state.global_step,
            margins["per_token"],
            margins["summed"],
        )


def lora_config(rank: int) -> LoraConfig:
    """LoRA of rank `rank` on every linear layer of the decoder (not the LM head)."""
    return LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",  # as the shipped adapter_config.json records
    )


def save_half_precision(model: PeftModel, out: Path) -> None:
    """Save the adapter with fp16 weights, halving it on disk (loading upcasts to the base)."""
    # The base is a local cache path on the training machine; name the model instead.
    model.peft_config["default"].base_model_name_or_path = REFERENCE_NAME
    model.save_pretrained(str(out))
    weights_path = out / "adapter_model.safetensors"
    weights = load_file(weights_path)
    save_file({k: v.half() for k, v in weights.items()}, weights_path, metadata={"format": "pt"})
    (out / "README.md").unlink(missing_ok=True)  # peft's template card; ours is MODEL_CARD.md


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[dict[str, Any]],
    out: Path,
    *,
    beta: float = 3.0,
    loss: str = "ipo",
    steps: int = 90,
    learning_rate: float = 2e-4,
    batch_size: int = 4,
    rank: int = 8,
    max_length: int = 192,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a LoRA adapter on `pairs` against `model` as reference and save it to `out`.

    Returns the run's record (also written as `out/training.json`), whose `final_margin` holds
    the margins of `log_ratio_margins` over the first 32 pairs.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if beta <= 0 or steps < 1 or not pairs:
        raise ValueError(f"need beta > 0, steps >= 1 and pairs; got {beta}, {steps}, {len(pairs)}")
    start = time.perf_counter()
    config = DPOConfig(
        output_dir=str(out / "checkpoints"),
        beta=beta,
        loss_type=[loss],
        max_length=max_length,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(steps // 20, 1),
        max_steps=steps,
        logging_steps=max(steps // 10, 1),
        save_strategy="no",
        report_to="none",
        seed=seed,
        use_cpu=True,
        bf16=False,  # fp32 compute was faster than bf16 on these CPUs
        gradient_checkpointing=False,  # memory is ample; recomputation would only cost time
    )
    probe = MarginTracker(tokenizer, pairs[:PROBE_PAIRS])
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tokenizer,
        peft_config=lora_config(rank),
        callbacks=[probe],
    )
    trainer.train()
    adapter = trainer.model
    if not isinstance(adapter, PeftModel):
        raise TypeError(f"expected the trainer to wrap a PeftModel, got {type(adapter).__name__}")
    final = log_ratio_margins(adapter, tokenizer, pairs[:MARGIN_PAIRS])
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # save_strategy="no" leaves it empty
    out.mkdir(parents=True, exist_ok=True)
    save_half_precision(adapter, out)
    record = {
        "reference": REFERENCE_NAME,
        "loss": loss,
        "beta": beta,
        "steps": steps,
        "seed": seed,
        "learning_rate": learning_rate,
        "lr_schedule": "cosine, 5% warmup",
        "batch_size": batch_size,
        "max_length": max_length,
        "lora": {"rank": rank, "alpha": 2 * rank, "target_modules": "all-linear"},
        "pairs": len(pairs),
        "final_margin": final,
        "theory_margin_per_token": 1 / (2 * beta) if loss == "ipo" else None,
        "margin_history": probe.history,
        "train_wall_time_s": round(time.perf_counter() - start, 1),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("Saved the adapter to %s; final margin %s", out, final)
    return record


def model_card(record: dict[str, Any], evaluation: str) -> str:
    """The adapter's model card in Markdown, ending with the given `## Evaluation` section."""
    margin = record["final_margin"]
    theory = record["theory_margin_per_token"]
    theory_line = f"; IPO's optimum is 1/(2β) = {theory:.3f} per token" if theory else ""
    return f"""# smollm2-warm-adapter

A LoRA adapter (rank {record["lora"]["rank"]}, all linear layers, fp16) for {REFERENCE_NAME},
the aligned side of this project's embedded DeRa pair. Built by `python -m dera_demo.train`.

## Aligned toward
Warm, encouraging and concise answers instead of flat ones: a friendly opener, the same content,
an encouraging closer, at most about {CONCISE_WORDS} words of body.

## Reward
`dera_demo.reward.reward`: rule-based and deterministic. Warm or encouraging phrases (+0.5 each,
capped at +2), one or two exclamation marks (+0.25 each; more than four cost), -0.02 per word past
120, -4 times the share of repeated word 3-grams, -2 for an empty answer. It only orders the pairs.

## Data
{record["pairs"]} preference pairs from `assets/prompts/train.jsonl` (the project's own prompts;
`heldout.jsonl` is never trained on). The reference model sampled one answer per prompt
(temperature 0.7, top-p 0.9, {record.get("max_new_tokens", "?")} new tokens, seed {record["seed"]}).
Chosen: a warm opener + the answer trimmed to whole sentences within {CONCISE_WORDS} words + an
encouraging closer. Rejected: the flat answer trimmed to whole sentences. Pairs the reward did not
order, and looping answers, were dropped. The pairs are in `pairs.jsonl`.

## Training
trl `DPOTrainer` with the reference model (adapter off) as DPO's reference.
- loss `{record["loss"]}`, β = {record["beta"]}, {record["steps"]} steps, seed {record["seed"]}
- batch {record["batch_size"]}, learning rate {record["learning_rate"]} ({record["lr_schedule"]})
- max length {record["max_length"]} tokens
- wall time on 2 CPU cores: {record["train_wall_time_s"]:.0f} s training, \
{record.get("total_wall_time_s", record["train_wall_time_s"]):.0f} s in all
- final chosen-minus-rejected log-ratio margin (first {MARGIN_PAIRS} pairs): \
{margin["per_token"]:.3f} nats per token, {margin["summed"]:.1f} nats summed{theory_line}
- the margin over training is in `training.json`

{evaluation}"""


def write_model_card(out: Path, record: dict[str, Any]) -> None:
    """Write `out/MODEL_CARD.md`, keeping the `## Evaluation` section of an existing card."""
    path = out / "MODEL_CARD.md"
    evaluation = "## Evaluation\n\n_To be filled with a strength (λ) table._\n"
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if "## Evaluation" in old:
            evaluation = old[old.index("## Evaluation") :]
    path.write_text(model_card(record, evaluation), encoding="utf-8")


def load_reference(path: Path) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The reference tokenizer and fp32 model from a local checkpoint folder."""
    config = AutoConfig.from_pretrained(path)
    # NOTE: the converted SmolLM2 checkpoint keeps the GGUF `quantization_config` although its
    # weights are plain fp32, and the Trainer refuses to train a GGUF-"quantized" model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=torch.float32)
    return AutoTokenizer.from_pretrained(path), model


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def write_jsonl(path: Path, rows: list[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ADAPTER_DIR, help="adapter folder")
    parser.add_argument("--prompts", type=Path, default=PROMPTS_DIR / "train.jsonl")
    parser.add_argument("--loss", choices=LOSSES, default="ipo", help="trl loss_type")
    parser.add_argument("--beta", type=float, default=3.0, help="KL coefficient (IPO's τ)")
    parser.add_argument("--steps", type=int, default=90)
    parser.add_argument("--lr", type=float, default=2e-4, help="learning rate")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--max-new-tokens", type=int, default=80, help="per sampled answer")
    parser.add_argument("--pairs", type=Path, default=None, help="reuse a pairs.jsonl file")
    parser.add_argument(
        "--answers", type=Path, default=None, help="reuse sampled answers (an answers.jsonl file)"
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Sample answers, build pairs, train and save the adapter with its record and card."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(2)
    torch.manual_seed(args.seed)

    tokenizer, model = load_reference(reference_dir())
    answers: list[dict[str, str]] = []
    if args.pairs is not None:
        pairs = read_jsonl(args.pairs)
    else:
        if args.answers is not None:
            answers = read_jsonl(args.answers)
        else:
            prompts = load_prompts(args.prompts)[: args.limit]
            sampled = sample_answers(
                model.eval(), tokenizer, prompts, max_new_tokens=args.max_new_tokens
            )
            answers = [{"prompt": p, "answer": a} for p, a in zip(prompts, sampled, strict=True)]
        pairs = build_pairs(
            [a["prompt"] for a in answers], [a["answer"] for a in answers], args.seed
        )

    record = train(
        model.train(),
        tokenizer,
        pairs,
        args.out,
        beta=args.beta,
        loss=args.loss,
        steps=args.steps,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        rank=args.rank,
        seed=args.seed,
    )
    record["max_new_tokens"] = args.max_new_tokens
    record["total_wall_time_s"] = round(time.perf_counter() - start, 1)
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    write_jsonl(args.out / "pairs.jsonl", pairs)
    if answers:
        write_jsonl(args.out / "answers.jsonl", answers)
    write_model_card(args.out, record)


if __name__ == "__main__":
    main()
