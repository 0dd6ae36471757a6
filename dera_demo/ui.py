"""The Gradio app: a live λ slider over streaming text, and side-by-side comparison.

`build_app(backend)` takes the backend as an argument, so tests build the UI with a fake one.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from dera_demo.engine import MAX_STRENGTHS
from dera_demo.render import CSS, cards_html, parse_strengths, run_record, stats_line, tokens_html
from dera_demo.service import CUSTOM_PAIR, Backend
from dera_demo.webapi import (
    DEFAULT_STRENGTHS,
    DEFAULTS,
    GPU,
    MAX_NEW_TOKENS_UI,
    register_api,
    sampling_config,
    session_id,
    user_errors,
)

# Every control's bounds, default, label and help text, in one place.
STRENGTH_MAX, STRENGTH_WIDE_MAX = 3.0, 10.0
CONTROLS: dict[str, dict[str, Any]] = {
    "strength": dict(
        minimum=0.0,
        maximum=STRENGTH_MAX,
        value=1.0,
        step=0.05,
        label="Realignment strength λ",
        info="0 = the SFT model · 1 = the aligned model · above 1 = stronger than trained. "
        "Moving it while a response streams changes the tokens still to come.",
    ),
    "temperature": dict(
        minimum=0.0,
        maximum=2.0,
        value=DEFAULTS.temperature,
        step=0.05,
        label="Temperature",
        info="0 is greedy; higher is more varied.",
    ),
    "top_p": dict(
        minimum=0.05,
        maximum=1.0,
        value=DEFAULTS.top_p,
        step=0.01,
        label="Top-p",
        info="Sample from the fewest tokens that reach this probability; 1 is off.",
    ),
    "top_k": dict(
        minimum=0,
        maximum=200,
        value=DEFAULTS.top_k,
        step=1,
        label="Top-k",
        info="Sample from the k most likely tokens; 0 is off.",
    ),
    "max_new_tokens": dict(
        minimum=1,
        maximum=MAX_NEW_TOKENS_UI,
        value=DEFAULTS.max_new_tokens,
        step=1,
        label="Max new tokens",
        info="Length limit of each response.",
    ),
    "repetition_penalty": dict(
        minimum=1.0,
        maximum=2.0,
        value=DEFAULTS.repetition_penalty,
        step=0.05,
        label="Repetition penalty",
        info="Above 1 discourages repeating tokens (it keeps λ above 1 readable); 1 is off.",
    ),
}
PRIVATE: dict[str, Any] = {"queue": False, "api_visibility": "private"}  # instant UI-only events
MODES = ["0 · slider λ · 1", "Custom list"]
# Held-out prompts where the embedded pair's reward gained most from λ = 0 to λ = 1 and 2 in the
# evaluation of its model card.
EXAMPLES = [
    "What should I bring on a day hike?",
    "What spices go well with roasted chicken?",
    "How can I tell when pasta is cooked properly?",
    "What is recursion?",
]
INTRO = """# Decoding-time realignment (DeRa)
Each token is drawn from `softmax(λ·aligned + (1−λ)·reference)` logits
([Liu et al., ICML 2024](https://arxiv.org/abs/2402.02992)). **λ = 0** is the supervised (SFT)
model, **λ = 1** the aligned model, values between are gentler alignment and values above 1 push
past what training did. Move the slider while a response streams to steer the rest of it; release
it when nothing runs to regenerate from the same seed and watch the answer change."""
TOKENS_HELP = (
    "**Where alignment acts.** Each token is shaded by how much more the aligned model liked it "
    "than the SFT model: red where the aligned model preferred it, blue where the SFT model did. "
    "Hover for the log-ratio."
)


def _settings() -> list[gr.components.Component]:
    """System prompt and sampling controls, shared by both tabs."""
    with gr.Accordion("Settings", open=False):
        system = gr.Textbox(label="System prompt", info="Optional; empty keeps the default.")
        with gr.Row():
            temperature = gr.Slider(**CONTROLS["temperature"])
            top_p = gr.Slider(**CONTROLS["top_p"])
            top_k = gr.Slider(**CONTROLS["top_k"])
        with gr.Row():
            tokens = gr.Slider(**CONTROLS["max_new_tokens"])
            seed = gr.Number(
                DEFAULTS.seed,
                precision=0,
                minimum=0,
                label="Seed",
                info="Same seed, same randomness at every λ: answers differ only where λ matters.",
            )
            penalty = gr.Slider(**CONTROLS["repetition_penalty"])
    return [system, temperature, top_p, top_k, tokens, seed, penalty]


def _pair_picker(backend: Backend) -> None:
    def choose(name: str, ref: str, aligned: str) -> str:
        try:
            return backend.select(name, ref, aligned)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    with gr.Row(visible=not backend.locked):
        pair = gr.Dropdown(
            backend.pair_names(),
            value=backend.pair_name,
            label="Model pair",
            scale=2,
            info="The embedded pair runs offline; the others need network access.",
        )
        custom = backend.pair_name == CUSTOM_PAIR
        ref = gr.Textbox(label="Reference (SFT) model", info="Hub id or folder", visible=custom)
        aligned = gr.Textbox(label="Aligned model", info="Hub id, folder, adapter", visible=custom)
        use = gr.Button("Use this pair", scale=0)
    note = gr.Markdown(backend.describe(), elem_id="pair-note")

    def show_custom(name: str) -> list[Any]:
        return [gr.update(visible=name == CUSTOM_PAIR)] * 2

    pair.change(show_custom, [pair], [ref, aligned], **PRIVATE)
    use.click(choose, [pair, ref, aligned], [note], api_visibility="private")


def build_app(backend: Backend) -> gr.Blocks:
    """The whole interface, wired to `backend`."""

    # gr.Request comes first: Gradio inserts it by position, which *settings would break.
    @GPU
    @user_errors
    def stream_live(request: gr.Request, prompt, system, strength, *settings):
        config = sampling_config(*settings)
        for run in backend.run(session_id(request), prompt, [strength], config, system=system):
            if run.warning and run.done:
                gr.Warning(run.warning)
            yield run.sequences[0].text, tokens_html(run.sequences[0]), stats_line(run)

    @GPU
    @user_errors
    def stream_compare(request: gr.Request, prompt, system, mode, strength, strengths, *settings):
        chosen = [0.0, strength, 1.0] if mode == MODES[0] else None
        chosen = chosen or parse_strengths(strengths, MAX_STRENGTHS)
        config = sampling_config(*settings)
        for run in backend.run(session_id(request), prompt, chosen, config, system=system):
            yield cards_html(run), run_record(run), stats_line(run)

    def steer(strength: float, request: gr.Request) -> bool:
        """Move a running generation; True when none was running (then release regenerates)."""
        try:
            return not backend.set_strength(session_id(request), 0, strength)
        except ValueError as error:
            raise gr.Error(str(error)) from error

    def regenerate(request: gr.Request, idle, prompt, system, strength, *settings):
        if not idle or not (prompt or "").strip():
            yield gr.skip(), gr.skip(), gr.skip()
            return
        yield from stream_live(request, prompt, system, strength, *settings)

    def stop(request: gr.Request) -> None:
        backend.stop(session_id(request))

    with gr.Blocks(title="DeRa: decoding-time realignment") as demo:
        gr.Markdown(INTRO)
        _pair_picker(backend)
        prompt = gr.Textbox(
            label="Prompt",
            info="Your message; the chat template is applied.",
            lines=3,
            elem_id="prompt",
        )
        system, *settings = _settings()
        with gr.Tab("Live λ"):
            with gr.Row():
                strength = gr.Slider(**CONTROLS["strength"], elem_id="strength", scale=4)
                wide = gr.Checkbox(
                    label=f"Range up to {STRENGTH_WIDE_MAX:g}",
                    info="The paper goes to 10.",
                    scale=1,
                )
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            response = gr.Textbox(label="Response", lines=8, elem_id="response", buttons=["copy"])
            gr.Markdown(TOKENS_HELP)
            scores = gr.HTML(elem_id="tokens")
            stats = gr.Markdown(elem_id="stats")
            gr.Examples(EXAMPLES, inputs=[prompt], label="Try a prompt")
        with gr.Tab("Side by side"):
            mode = gr.Radio(
                MODES,
                value=MODES[0],
                label="Strengths",
                elem_id="mode",
                info="All generated together in one batch, with the same seed.",
            )
            strengths = gr.Textbox(
                DEFAULT_STRENGTHS,
                label="Custom strengths",
                elem_id="strengths",
                info=f"Up to {MAX_STRENGTHS}, comma-separated; fractions allowed.",
            )
            with gr.Row():
                compare_button = gr.Button("Compare", variant="primary", elem_id="compare")
                compare_stop = gr.Button("Stop", variant="stop")
            grid = gr.HTML(elem_id="compare-grid")
            compare_stats = gr.Markdown(elem_id="compare-stats")
            with gr.Accordion("Raw output (JSON)", open=False):
                record = gr.JSON()
        idle = gr.State(False)

        live_inputs = [prompt, system, strength, *settings]
        live_outputs = [response, scores, stats]
        model: dict[str, Any] = {"concurrency_id": "model", "api_visibility": "private"}
        running = [
            run_button.click(stream_live, live_inputs, live_outputs, **model),
            prompt.submit(stream_live, live_inputs, live_outputs, **model),
            strength.release(steer, [strength], [idle], **PRIVATE).then(
                regenerate, [idle, *live_inputs], live_outputs, **model
            ),
            compare_button.click(
                stream_compare,
                [prompt, system, mode, strength, strengths, *settings],
                [grid, record, compare_stats],
                **model,
            ),
        ]
        strength.input(steer, [strength], [idle], **PRIVATE)
        for button in (stop_button, compare_stop):
            button.click(stop, None, None, cancels=running, **PRIVATE)
        wide.change(
            lambda on: gr.Slider(maximum=STRENGTH_WIDE_MAX if on else STRENGTH_MAX),
            [wide],
            [strength],
            **PRIVATE,
        )
        demo.unload(stop)  # closing the tab stops its run
        register_api(backend)
    return demo


def launch(demo: gr.Blocks, *, concurrency: int = 1, queue_size: int = 16, **kwargs: Any) -> None:
    """Serve with a concurrency limit and a bounded queue (a full queue tells users it is busy)."""
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    demo.launch(css=CSS, footer_links=["api", "gradio"], **kwargs)
