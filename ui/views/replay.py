"""Slow-motion replay of a finished run (or an uploaded trace), round by round, with no model.

Rounds take tens of milliseconds, so live they blur together. Here a run becomes a list of
frames; a frame shows one moment of one round:
- ``draft i``: the draft's first i tokens, *pending* (dashed outline), each with its q;
- ``verify``: the full model's verdict on each, with p, q and the accept rule applied;
- ``append``: the correction or bonus token appended (or, for a plain round, the full model's token);
and a mini layer map with that round's column lit. A gr.Timer steps the frames (app.py).
"""
from __future__ import annotations

import html
from dataclasses import dataclass

from .palette import BELOW_DET_RULE, PLAIN_ROUND, RAN, SKIPPED
from .state import RunView, Token, is_below_det

SPEEDS = {"slow": 1.2, "normal": 0.6, "fast": 0.25}     # seconds per frame
MAP_ROUNDS = 40                                         # rounds shown on the mini layer map around the current one


@dataclass(frozen=True)
class Frame:
    round: int          # position in view.rounds
    phase: str          # "draft" | "verify" | "append"
    shown: int = 0      # drafted tokens shown (phase "draft")


def frames(view: RunView | None) -> list[Frame]:
    """Every frame of the replay in order."""
    out: list[Frame] = []
    for i, r in enumerate(view.rounds if view else []):
        if r.drafted:
            out += [Frame(i, "draft", n) for n in range(1, len(r.drafted) + 1)]
            out.append(Frame(i, "verify"))
        out.append(Frame(i, "append"))
    return out


def _esc(s: str) -> str:
    return html.escape(s.replace("\n", "↵"))


def _rule(view: RunView, q: float, p: float, accepted: bool) -> str:
    """The accept rule applied to one drafted token, in words."""
    if view.config.temperature > 0:
        ratio = min(1.0, p / q) if q > 0 else 1.0
        return f"accepted with probability min(1, p/q) = {ratio:.2f}: {'accepted' if accepted else 'rejected'}"
    return ("the full model's own top choice: accepted" if accepted
            else "not the full model's top choice: rejected")


def _token(text: str, cls: str, title: str, label: str = "") -> str:
    lab = f'<span class="rp-lab">{html.escape(label)}</span>' if label else ""
    return f'<span class="tok rp-tok {cls}" title="{html.escape(title, quote=True)}">{_esc(text)}{lab}</span>'


def before_text(view: RunView, index: int) -> str:
    """The output up to round ``index`` (its tokens as plain text, the last 200 characters)."""
    upto = view.rounds[index].index
    toks: list[Token] = [t for t in view.tokens() if t.emitted and (t.round is None or t.round < upto)]
    text = "".join(t.text for t in toks)
    return ("…" + text[-200:]) if len(text) > 200 else text


def round_html(view: RunView, f: Frame) -> str:
    r = view.rounds[f.round]
    parts = []
    if f.phase == "draft":
        for i in range(f.shown):
            parts.append(_token(r.drafted_text[i], "rp-pending", f"drafted, waiting for the full model: q = "
                                f"{r.draft_probs[i]:.2f}", f"q {r.draft_probs[i]:.2f}"))
        say = (f"The draft (the model with layers {', '.join(map(str, r.skip))} skipped) proposes token "
               f"{f.shown} of {len(r.drafted)}, with its probability q. It is pending: nothing is in the output yet.")
    else:
        for i, text in enumerate(r.drafted_text):
            if i > r.accepted:
                parts.append(_token(text, "rp-unseen", "after the first rejection: never looked at"))
                continue
            ok = i < r.accepted
            q, p = r.draft_probs[i], r.target_probs[i]
            parts.append(_token(text, "tok-accepted" if ok else "tok-rejected",
                                _rule(view, q, p, ok), f"p {p:.2f} q {q:.2f} {'✓' if ok else '✗'}"))
        emitted = len(r.emitted) > r.accepted
        if f.phase == "verify":
            say = (f"The full model checks all {len(r.drafted)} in one pass: {r.accepted} accepted"
                   + ("" if r.accepted == len(r.drafted) else ", then the first mismatch is rejected and the rest "
                      "discarded") + ". Rule: " + _rule(view, r.draft_probs[min(r.accepted, len(r.drafted) - 1)],
                                                        r.target_probs[min(r.accepted, len(r.drafted) - 1)],
                                                        r.accepted == len(r.drafted)) + ".")
        elif is_below_det(r):
            parts.append(_token(r.next_text, "tok-det", BELOW_DET_RULE, "below DET") if emitted else "")
            say = (f"Below DET: the draft ran one step ({r.draft_s * 1e3:.0f} ms), but its first guess fell below "
                   f"DET = {view.config.det:.2f}, so nothing was drafted (0 tokens). The full model takes "
                   f"one step and appends its token.")
        elif not r.drafted:
            parts.append(_token(r.next_text, "tok-plain", "a plain full-model step", "full model") if emitted else "")
            say = "No draft this round: the full model takes one plain step and appends its token."
        else:
            kind = "tok-bonus" if r.next_kind == "bonus" else "tok-corrected"
            if emitted:
                parts.append(_token(r.next_text, kind, f"the full model's own token ({r.next_kind})", r.next_kind))
            say = (f"{len(r.emitted)} token(s) enter the output: the accepted drafts"
                   + (f" and the full model's {'bonus' if r.next_kind == 'bonus' else 'correction'}" if emitted
                      else " (the run ended there)") + ".")
    return (f'<div class="rp-round"><span class="rp-before">{_esc(before_text(view, f.round))}</span>'
            f'{"".join(parts)}</div><p class="rp-say">{html.escape(say)}</p>')


def mini_map(view: RunView, index: int) -> str:
    """Layers x rounds around round ``index`` (a CSS grid); the round's column lit."""
    lo = max(0, min(index - MAP_ROUNDS // 2, len(view.rounds) - MAP_ROUNDS))
    rounds = view.rounds[lo:lo + MAP_ROUNDS]
    L = view.num_layers
    cells = []
    for layer in range(L - 1, -1, -1):
        for j, r in enumerate(rounds):
            colour = PLAIN_ROUND if r.plain else (SKIPPED if layer in r.skip else RAN)
            lit = " rp-lit" if lo + j == index else ""
            cells.append(f'<i class="rp-cell{lit}" style="background:{colour}"></i>')
    return (f'<div class="rp-map" title="layers (rows, top = last) × rounds {lo + 1}–{lo + len(rounds)}; purple: '
            f'skipped by the draft" style="grid-template-columns: repeat({len(rounds)}, 1fr)">{"".join(cells)}</div>')


def replay_html(view: RunView | None, position: int = 0) -> str:
    """Frame ``position`` (0-based) of the replay of ``view``."""
    fs = frames(view)
    if not fs:
        return '<div class="replay">Run a prompt (or load a trace), then press ▶ to watch it round by round.</div>'
    f = fs[max(0, min(position, len(fs) - 1))]
    r = view.rounds[f.round]
    head = (f'<div class="rp-head">round {r.index + 1} of {len(view.rounds)} · frame {position + 1} of {len(fs)} · '
            f'{"plain step" if r.plain else f"M = {len(r.skip)}"}{" · below DET" if is_below_det(r) else ""}</div>')
    return (f'<div class="replay">{head}<div class="rp-body"><div class="rp-main">{round_html(view, f)}</div>'
            f'<div class="rp-side">{mini_map(view, f.round)}</div></div></div>')


# ---- the controls' handlers (wired in app.py) -------------------------------------------------
PLAY, PAUSE = "▶ play", "⏸ pause"


def _view(state):
    return state.clasp if state is not None else None


def replay_controls():
    """▶/⏸, speed and the frame slider, and the gr.Timer that steps the frames."""
    import gradio as gr

    with gr.Row():
        play = gr.Button(PLAY, size="sm", elem_id="replay-play", scale=0, min_width=110)
        speed = gr.Radio(list(SPEEDS), value="normal", label="speed", elem_id="replay-speed", scale=2,
                         min_width=280)
        pos = gr.Slider(1, 2, value=1, step=1, label="frame", elem_id="replay-pos", scale=3, min_width=200)
    timer = gr.Timer(SPEEDS["normal"], active=False)
    return pos, {"replay_play": play, "replay_speed": speed, "replay_timer": timer}


def round_frame(view: RunView | None, current: int | None) -> int:
    """The first frame (0-based) of the round at position ``current`` in the run: where slow motion stands
    when Teach selects that round."""
    return next((i for i, f in enumerate(frames(view)) if f.round == (current or 0)), 0)


def replay_range(view: RunView | None, current: int | None = None):
    import gradio as gr

    n = len(frames(view))
    return gr.update(minimum=1, maximum=max(2, n), value=round_frame(view, current) + 1, interactive=n > 1)


def replay_seek(state, pos):
    """The frame slider moved: show that frame (1-based on the slider)."""
    return replay_html(_view(state), int(pos or 1) - 1)


def replay_toggle(label, speed, state, pos):
    """▶ starts the timer (from the start once at the end), ⏸ stops it."""
    import gradio as gr

    n = len(frames(_view(state)))
    if label == PLAY and n:
        start = 1 if int(pos or 1) >= n else int(pos or 1)
        return gr.Timer(SPEEDS.get(speed, SPEEDS["normal"]), active=True), PAUSE, start
    return gr.Timer(active=False), PLAY, pos


def replay_speed(speed, label):
    import gradio as gr

    return gr.Timer(SPEEDS.get(speed, SPEEDS["normal"]), active=label == PAUSE)


def replay_tick(state, pos):
    """One timer tick: the next frame; at the last one the timer stops."""
    import gradio as gr

    view = _view(state)
    n = len(frames(view))
    nxt = min(n, int(pos or 1) + 1)
    if nxt >= n:
        return nxt, replay_html(view, nxt - 1), gr.Timer(active=False), PLAY
    return nxt, replay_html(view, nxt - 1), gr.Timer(active=True), PAUSE
