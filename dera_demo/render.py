"""Turning runs into what the web app shows: text, coloured tokens, side-by-side cards, stats."""

from __future__ import annotations

import html
import math
from fractions import Fraction

from dera_demo.realign import check_strength
from dera_demo.service import RunView, SequenceView

STOP_LABELS = {
    "eos": "finished",
    "stop_string": "stop string",
    "max_new_tokens": "hit max new tokens",
    "context": "hit the context limit",
    None: "stopped",
}


def parse_strengths(text: str, limit: int) -> list[float]:
    """Parse "0, 1/6, 2/3, 1, 3" into strengths, naming any item that is not a valid strength."""
    items = [item.strip() for item in text.replace(";", ",").split(",") if item.strip()]
    if not 1 <= len(items) <= limit:
        raise ValueError(f"give from 1 to {limit} strengths separated by commas, got {text!r}")
    strengths = []
    for item in items:
        try:
            value = float(Fraction(item))
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"{item!r} is not a number; write strengths like 0, 1/6, 2/3, 1, 3"
            ) from None
        strengths.append(check_strength(value))
    return strengths


def tokens_html(view: SequenceView) -> str:
    """The response with each token shaded by log p_aligned − log p_ref of that token.

    Red: the aligned model preferred it; blue: the reference did. The shade is tanh(ratio / 2),
    so a ratio of e^2 (about 7x) is 76% of full colour; hovering shows the value in nats.
    """
    spans = []
    for piece, ratio in view.pieces:
        shade = math.tanh(ratio / 2)
        colour = "220, 38, 38" if shade > 0 else "37, 99, 235"
        spans.append(
            f'<span class="dera-token" title="log-ratio {ratio:+.2f}" '
            f'style="background: rgba({colour}, {abs(shade) * 0.6:.2f})">'
            f"{html.escape(piece)}</span>"
        )
    return f'<div class="dera-tokens">{"".join(spans)}</div>'


def stats_line(run: RunView) -> str:
    if run.first_token_s is None:
        return "Waiting for the first token…"
    tokens = sum(v.tokens for v in run.sequences)
    state = "Done" if run.done else "Generating"
    speed = f"{run.tokens_per_s:.1f} tokens/s" if run.tokens_per_s else "–"
    line = f"**{state}** · first token after {run.first_token_s:.2f} s · {tokens} tokens · {speed}"
    if run.done:
        reasons = sorted({STOP_LABELS[v.stop_reason] for v in run.sequences})
        line += " · " + ", ".join(reasons)
    return line


def strength_label(strength: float) -> str:
    if strength == 0:
        return "λ = 0 · reference (SFT)"
    if strength == 1:
        return "λ = 1 · aligned"
    return f"λ = {strength:.3g}" + (" · stronger than trained" if strength > 1 else "")


def cards_html(run: RunView) -> str:
    """Side-by-side cards, one per strength, for the comparison view."""
    cards = []
    for view in run.sequences:
        status = STOP_LABELS[view.stop_reason] if run.done else "…"
        cards.append(
            '<div class="dera-card">'
            f"<h4>{html.escape(strength_label(view.strength))}</h4>"
            f'<div class="dera-text">{html.escape(view.text)}</div>'
            f'<div class="dera-meta">{view.tokens} tokens · {status}</div>'
            "</div>"
        )
    return f'<div class="dera-grid">{"".join(cards)}</div>'


def run_record(run: RunView) -> list[dict[str, object]]:
    """The JSON the API returns for a run: one object per strength."""
    return [
        {
            "strength": v.strength,
            "text": v.text,
            "tokens": v.tokens,
            "stop_reason": v.stop_reason,
            "done": run.done,
        }
        for v in run.sequences
    ]


CSS = """
.dera-grid { display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); }
.dera-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px; }
.dera-card h4 { margin: 0 0 6px 0; }
.dera-text { white-space: pre-wrap; font-size: 0.95em; min-height: 3em; }
.dera-tokens { white-space: pre-wrap; line-height: 1.7; }
.dera-token { border-radius: 3px; }
.dera-meta { color: var(--body-text-color-subdued); font-size: 0.8em; margin-top: 6px; }
"""
