import json

import pytest

from dera_demo.cli import load_scorer, main
from dera_demo.engine import SamplingConfig
from dera_demo.sweep import (
    SweepOutput,
    evaluation_section,
    summarize,
    sweep,
    table,
    update_card,
    write_report,
)

CONFIG = SamplingConfig(max_new_tokens=8, temperature=1.0, seed=5)


def test_a_sweep_scores_every_prompt_sample_and_strength(fp32_pair):
    outputs = sweep(fp32_pair, ["Hello", "Bake"], [0.0, 1.0, 2.0], len, samples=2, config=CONFIG)
    assert len(outputs) == 2 * 2 * 3
    assert all(o.reward == len(o.text) for o in outputs)
    rows = summarize(outputs)
    assert [r.strength for r in rows] == [0.0, 1.0, 2.0]
    assert rows[0].mean_kl == pytest.approx(0.0, abs=1e-5)  # strength 0 is the reference itself
    assert rows[1].mean_kl > 0 and rows[2].mean_kl > rows[1].mean_kl
    seeds_differ = {o.text for o in outputs if o.prompt == "Hello" and o.strength == 1.0}
    assert len(seeds_differ) == 2


def test_the_report_has_a_table_a_plot_and_every_output(fp32_pair, tmp_path):
    outputs = sweep(fp32_pair, ["Hello"], [0.0, 0.5], len, samples=1, config=CONFIG)
    rows = write_report(outputs, tmp_path, beta=0.1)
    record = json.loads((tmp_path / "sweep.json").read_text())
    assert len(record["outputs"]) == 2 and len(record["rows"]) == 2
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    markdown = (tmp_path / "sweep.md").read_text()
    assert "| 0.5 |" in markdown and "0.2 |" in markdown  # β/λ = 0.1 / 0.5
    assert "∞ (the SFT model)" in markdown
    assert rows[0].outputs == 1


def test_summary_statistics_are_right():
    outputs = [
        SweepOutput("p", i, 1.0, "t", reward, 0.5, 10) for i, reward in enumerate([1.0, 3.0])
    ]
    (row,) = summarize(outputs)
    assert row.mean_reward == 2.0 and row.reward_sem == pytest.approx(1.0)
    assert row.gain is None
    assert "| 1 | 2.00 ± 1.00 | — | 0.500 | 10 | 2 |" in table([row])


def test_gains_are_paired_by_prompt_and_seed():
    # Rewards differ a lot between prompts but λ = 1 beats λ = 0 by exactly 0.5 on each, so the
    # paired gain has no spread even though each mean has a large one.
    rewards = {("a", 0): 0.0, ("a", 1): 4.0, ("b", 0): -3.0}
    outputs = [SweepOutput(p, i, 0.0, "t", r, 0.0, 5) for (p, i), r in rewards.items()]
    outputs += [SweepOutput(p, i, 1.0, "t", r + 0.5, 0.1, 5) for (p, i), r in rewards.items()]
    outputs.append(SweepOutput("c", 0, 1.0, "t", 9.0, 0.1, 5))  # no λ = 0 partner: not paired
    low, high = summarize(outputs)
    assert high.gain == pytest.approx(0.5) and high.gain_sem == pytest.approx(0.0)
    assert high.reward_sem > 1
    assert "| 1 | 2.88 ± 2.49 | +0.50 ± 0.00 |" in table([low, high])


def test_the_command_line_sweep_writes_its_report(tiny_pair, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hello"}\n{"prompt": "Bake bread"}\n')
    code = main(
        [
            "sweep",
            "--ref",
            str(tiny_pair.ref_dir),
            "--aligned",
            str(tiny_pair.aligned_dir),
            "--precision",
            "none",
            "--prompts",
            str(prompts),
            "--samples",
            "1",
            "--strength",
            "0",
            "1",
            "--max-new-tokens",
            "4",
            "--scorer",
            "builtins:len",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    assert "mean reward" in capsys.readouterr().out
    assert (tmp_path / "o" / "sweep.md").is_file()


def test_a_bad_scorer_is_named():
    with pytest.raises(ValueError, match="module:function, got 'nowhere'"):
        load_scorer("nowhere")
    assert load_scorer("builtins:len")("abc") == 3


def test_the_model_card_gets_an_evaluation_section(tmp_path):
    outputs = [SweepOutput("Why?", 0, s, f"answer at {s}", s, 0.1 * s, 5) for s in (0.0, 1.0, 2.0)]
    section = evaluation_section(summarize(outputs), outputs, command="python -m dera_demo sweep")
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Card\n\n## Evaluation\n\nold\n")
    update_card(card, section)
    text = card.read_text()
    assert text.startswith("# Card") and "old" not in text
    assert "- λ = 2 (reward +2.00): answer at 2.0" in text and "| 2 | 2.00 ± 0.00 |" in text
