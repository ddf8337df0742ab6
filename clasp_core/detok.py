"""Incremental detokenization: the text each new token adds, without broken characters.

Byte-level BPE splits CJK, emoji and accented letters over several tokens, so decoding one
token alone gives U+FFFD. Here a token's piece is the difference of two decodes of a short
window of recent tokens (with and without the new ones), and a piece is held back while the
window's text ends in U+FFFD (an incomplete character), as HF's TextStreamer and vLLM do.

The committed pieces of a run concatenate to exactly
``tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)``:
special tokens (e.g. the EOS) keep their text, so every token has a visible piece where it
ends a character. ``peek`` gives the pieces of tokens that may be thrown away (a draft the
full model rejects) relative to the committed text, without committing them; no piece, committed
or peeked, ever holds U+FFFD (except a run's very last piece if it stopped inside a character).
"""
from __future__ import annotations


class Detokenizer:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.start = 0          # the window: ids[start:] are decoded together
        self.read = 0           # ids[:read] have their text out; ids[read:] are held back

    def text(self, ids: list[int]) -> str:
        if self.tok is None:
            return "".join(f"<{t}>" for t in ids)
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def push(self, tokens: list[int], final: bool = False) -> list[str]:
        """Commit tokens; one piece each ("" while held back). ``final`` releases what is held."""
        pieces, self.start, self.read = self._pieces(tokens, final)
        self.ids.extend(tokens)
        return pieces

    def peek(self, tokens: list[int]) -> list[str]:
        """Pieces the tokens would add after the committed ones; nothing is committed.

        A draft that stops inside a character shows "" for its last tokens rather than U+FFFD:
        their bytes never became a character."""
        return self._pieces(tokens, final=False)[0]

    def flush(self) -> str:
        """Commit the text still held back (non-empty only when a run stopped inside a character)."""
        piece, self.start, self.read = self._step(self.ids, len(self.ids), self.start, self.read, True)
        return piece

    def _pieces(self, tokens: list[int], final: bool) -> tuple[list[str], int, int]:
        ids = self.ids + tokens
        start, read = self.start, self.read
        pieces = []
        for end in range(len(self.ids) + 1, len(ids) + 1):
            piece, start, read = self._step(ids, end, start, read, final and end == len(ids))
            pieces.append(piece)
        return pieces, start, read

    def _step(self, ids: list[int], end: int, start: int, read: int, release: bool) -> tuple[str, int, int]:
        """The text ids[read:end] add, and the new window; "" (window kept) while it ends inside a character."""
        before = self.text(ids[start:read])
        now = self.text(ids[start:end])
        if len(now) > len(before) and (release or not now.endswith("\ufffd")):
            return now[len(before):], read, end
        return "", start, read
