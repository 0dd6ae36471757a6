import pytest

from dera_demo.render import cards_html, parse_strengths, stats_line, tokens_html
from dera_demo.service import RunView, SequenceView


def test_strength_lists_accept_fractions_and_name_bad_items():
    assert parse_strengths("0, 1/6, 2/3, 1, 3", 16) == pytest.approx([0, 1 / 6, 2 / 3, 1, 3])
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_strengths("0, x", 16)
    with pytest.raises(ValueError, match="from 0 to 10"):
        parse_strengths("0, 11", 16)
    with pytest.raises(ValueError, match="give from 1 to 2 strengths"):
        parse_strengths("0, 1, 2", 2)
    with pytest.raises(ValueError, match="give from 1 to 2 strengths"):
        parse_strengths(" , ", 2)


def test_tokens_are_shaded_by_which_model_preferred_them_and_escaped():
    view = SequenceView(strength=1.0, pieces=[("<b>hi", 3.0), (" there", -3.0), ("!", 0.0)])
    page = tokens_html(view)
    assert "&lt;b&gt;hi" in page and "<b>" not in page
    assert "rgba(220, 38, 38, 0.54)" in page  # red: the aligned model liked it (tanh(1.5) * 0.6)
    assert "rgba(37, 99, 235, 0.54)" in page  # blue: the reference did
    assert 'title="log-ratio +3.00"' in page


def test_cards_show_each_strength_with_its_text_escaped():
    views = [SequenceView(0.0, text="a < b"), SequenceView(1.0, text="ok", stop_reason="eos")]
    page = cards_html(RunView(views, done=True))
    assert "λ = 0 · reference (SFT)" in page and "λ = 1 · aligned" in page
    assert "a &lt; b" in page and "finished" in page


def test_stats_report_first_token_and_speed():
    run = RunView([SequenceView(1.0, tokens=12, stop_reason="max_new_tokens")], 0.25, 30.0, True)
    line = stats_line(run)
    assert "first token after 0.25 s" in line and "12 tokens" in line and "30.0 tokens/s" in line
    assert "hit max new tokens" in line
    assert stats_line(RunView([])) == "Waiting for the first token…"
