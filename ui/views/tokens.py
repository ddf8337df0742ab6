"""The token stream: every output token coloured by what it was, details on hover."""
from __future__ import annotations

import html

from .palette import BELOW_DET_RULE, COPIED, KIND_COLOURS, KIND_LABELS
from .state import RunView, Token


def _title(t: Token) -> str:
    parts = [f"token #{t.position}", BELOW_DET_RULE if t.kind == "det" else KIND_LABELS[t.kind]]
    if t.round is not None:
        parts.append(f"round {t.round + 1}")
    elif t.position == 0:
        parts.append("from the prefill")
    if t.prob is not None:
        parts.append(f"draft q(x) = {t.prob:.3f}")
    if t.target is not None:
        parts.append(f"full p(x) = {t.target:.3f}")
    if t.source:
        parts.append(copy_title(t))
    elif t.skip:
        parts.append(f"skipped layers: {', '.join(map(str, t.skip))}")
    if not t.text:
        parts.append("part of a character: its text shows with the next token")
    return " | ".join(parts)


def _visible(text: str) -> str:
    return html.escape(text).replace("\n", "↵<br>")


def _where(pos: int, prompt_len: int | None = None) -> str:
    if prompt_len is None:
        return f"context position {pos}"
    return f"prompt token {pos}" if pos < prompt_len else f"output token #{pos - prompt_len}"


def copy_title(t: Token) -> str:
    """Where a copied draft token came from: the matched n-gram and the position copied from."""
    s = t.source
    prompt_len = s.get("prompt_len")
    gram = s.get("ngram_text")
    gram = f" “{gram}”" if gram else ""
    at = s["copied_from"] + t.offset
    where = ("the prompt" if s.get("in_prompt") else "the output so far")
    return (f"copied by prompt lookup from {where} ({_where(at, prompt_len)}): the last {s['n']} token(s){gram} "
            f"also stood at {_where(s['start'], prompt_len)}, and this followed them")


def copy_source_html(t: Token) -> str:
    """The copied span in its context, shown (highlighted) while the copied token is hovered."""
    s = t.source
    if "copied_text" not in s:
        return ""
    return (f'<span class="copy-src"><span class="copy-before">{_visible(s.get("before", ""))}</span>'
            f'<span class="copy-ngram">{_visible(s.get("ngram_text", ""))}</span>'
            f'<mark class="copy-span">{_visible(s["copied_text"])}</mark>'
            f'<span class="copy-after">{_visible(s.get("after", ""))}</span></span>')


def token_spans(tokens: list[Token], highlight_round: int | None = None, parting: int | None = None) -> str:
    """``parting``: the output position where CLaSp and vanilla part (ui.timing.parting), marked."""
    spans = []
    for t in tokens:
        current = highlight_round is not None and t.round == highlight_round
        cls = f"tok tok-{t.kind}" + (" tok-current" if current else "")
        cls += " tok-copied" if t.source else ""
        title = _title(t)
        if parting is not None and t.emitted and t.position == parting:
            cls += " tok-parting"
            title += " | the two runs (drafting and vanilla) part here (see the Timing tab)"
        src = (f' data-copied-from="{t.source["copied_from"] + t.offset}"' if t.source else "")
        spans.append(f'<span class="{cls}" data-kind="{t.kind}" data-round="{"" if t.round is None else t.round}"{src} '
                     f'title="{html.escape(title, quote=True)}">{_visible(t.text)}'
                     f'{copy_source_html(t) if t.source else ""}</span>')
    return "".join(spans)


def legend_html() -> str:
    items = "".join(f'<span class="legend-item"><span class="swatch" style="background:{KIND_COLOURS[k]}"></span>'
                    f"{KIND_LABELS[k]}</span>" for k in KIND_COLOURS)
    items += (f'<span class="legend-item"><span class="swatch swatch-copied" style="border-color:{COPIED}"></span>'
              f"copied from the context (prompt lookup)</span>")
    return f'<div class="legend">{items}</div>'


def token_html(view: RunView | None, highlight_round: int | None = None, legend: bool = True,
               parting: int | None = None) -> str:
    head = legend_html() if legend else ""
    if view is None or view.prefill is None:
        return f'{head}<div class="tokens tokens-empty">The output appears here, token by token.</div>'
    body = token_spans(view.tokens(), highlight_round, parting)
    # No closing </div> (the browser closes it): while a run streams, each snapshot's HTML then only
    # appends to the last one, and Gradio sends just the new spans instead of the whole stream.
    return f'{head}<div class="tokens" data-method="{view.method}">{body}'
