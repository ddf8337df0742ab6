"""A run's output: the tokens emitted so far, their text pieces, and when the run must stop.

The decoding loop adds tokens here and nowhere else, so the stopping rules (EOS, the token
budget, the stop flag) and the text a viewer streams (detok.py) follow the same list.
"""
from __future__ import annotations

import threading

from .detok import Detokenizer


class Output:
    def __init__(self, tokenizer, eos: set[int], max_new_tokens: int, stop: threading.Event | None):
        self.ids: list[int] = []
        self.tokenizer = tokenizer
        self.eos = eos
        self.max_new_tokens = max_new_tokens
        self.stop = stop
        self.detok = Detokenizer(tokenizer)

    def finished(self) -> str | None:
        """Why the run ends here (None: it goes on)."""
        if self.ids and self.ids[-1] in self.eos:
            return "eos"
        if len(self.ids) >= self.max_new_tokens:
            return "max_new_tokens"
        if self.stop is not None and self.stop.is_set():
            return "stopped"
        return None

    def extend(self, tokens: list[int]) -> list[int]:
        """Add a round's tokens, cut after EOS and at max_new_tokens; returns those added."""
        emitted = []
        for t in tokens:
            if len(self.ids) >= self.max_new_tokens:
                break
            self.ids.append(t)
            emitted.append(t)
            if t in self.eos:
                break
        return emitted

    def commit(self, tokens: list[int]) -> list[str]:
        """Text pieces of tokens just added to the output (see detok.py); the last ones release all."""
        return self.detok.push(tokens, final=self.finished() is not None)

    def round_texts(self, drafted: list[int], acc: int, nxt: int, n_emitted: int) -> tuple[list[str], str]:
        """Pieces of the drafted tokens and of the next token: committed where emitted, else peeked
        after the accepted prefix (a rejected draft's text is never part of the output)."""
        kept = min(acc, n_emitted)
        last = n_emitted == kept                         # no next token: the accepted drafts end the output
        done = self.finished() is not None
        texts = self.detok.push(drafted[:kept], final=done and last)
        texts += self.detok.peek(drafted[kept:])
        if not last:
            return texts, self.detok.push([nxt], final=done)[0]
        return texts, self.detok.peek(drafted[kept:acc] + [nxt])[-1]

    def text(self) -> str:
        """The whole output decoded at once (token ids joined by spaces without a tokenizer)."""
        tok = self.tokenizer
        return tok.decode(self.ids, skip_special_tokens=True) if tok is not None else " ".join(map(str, self.ids))

    def tail(self) -> str:
        """The text the streamed pieces still held back (detok.py), released at the end."""
        return self.detok.flush()
