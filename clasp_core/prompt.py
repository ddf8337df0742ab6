"""A prompt as token ids: the chat template where the tokenizer has one.

Its own module so that everything that encodes prompts (the decoding loop, the static search's
calibration, the bench) can import it without importing each other.
"""
from __future__ import annotations

from .model import LoadedModel


def encode_prompt(lm: LoadedModel, prompt: str, chat: bool = True) -> tuple[list[int], str]:
    """(token ids, the text they encode): the user turn in the chat template when ``chat`` and the
    tokenizer has one, else the prompt as it is."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt is empty: type something to continue")
    tok = lm.tokenizer
    if tok is None:
        raise ValueError("this model has no tokenizer; pass prompt_ids instead")
    if chat and getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:
        text = prompt
        ids = tok(text)["input_ids"]
    return list(ids), text
