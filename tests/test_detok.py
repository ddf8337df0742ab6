"""Incremental detokenization: no broken characters, and the pieces add up to the decoded text."""
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from clasp_core.decoding import GenConfig, generate
from clasp_core.detok import Detokenizer
from clasp_core.trace import Round, Step

MIXED = "Repeat exactly: 北京欢迎你 🙂 café"


def decoded(tok, ids):
    return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def one_by_one(tok, ids):
    d = Detokenizer(tok)
    pieces = [p for t in ids for p in d.push([t])]
    return pieces + [d.flush()]


def sentencepiece_style() -> PreTrainedTokenizerFast:
    """A Llama-1/2-style tokenizer: Metaspace "▁" word starts, byte fallback, the leading space stripped."""
    words = ["▁Hello", "▁world", "▁caf", "é", "▁", "!", "H", "e", "l", "o", "w", "r", "d"]
    vocab = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [(f"<0x{b:02X}>", -10.0) for b in range(256)]
    vocab += [(w, -1.0) for w in words]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_single_token_decoding_breaks_characters_and_the_detokenizer_does_not(embedded):
    tok = embedded.tokenizer
    ids = tok(MIXED)["input_ids"] + embedded.eos_ids[:1]
    assert sum("\ufffd" in tok.decode([t]) for t in ids) >= 10       # the bug this fixes
    pieces = one_by_one(tok, ids)
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == decoded(tok, ids) == tok.decode(ids)
    assert "" in pieces and " 北" in pieces and pieces[-2] == "<|im_end|>"   # held back, whole, special kept


def test_sentencepiece_style_leading_spaces_and_byte_fallback():
    tok = sentencepiece_style()
    ids = tok("Hello world 北京 café!", add_special_tokens=False)["input_ids"]
    assert "<0xE5>" in tok.convert_ids_to_tokens(ids)                   # CJK went to bytes
    pieces = one_by_one(tok, ids)
    assert pieces[:2] == ["Hello", " world"]       # the first word's space is stripped, as decode does
    assert "".join(pieces) == decoded(tok, ids) == "Hello world 北京 café!"
    assert not any("\ufffd" in p for p in pieces) and "北" in pieces and "京" in pieces


def test_peek_is_relative_to_the_committed_text_and_commits_nothing():
    tok = sentencepiece_style()
    ids = tok("Hello world café", add_special_tokens=False)["input_ids"]
    d = Detokenizer(tok)
    assert d.push(ids[:1]) == ["Hello"]
    assert d.peek(ids[1:2]) == [" world"]                 # a draft after the accepted prefix
    assert d.peek(ids[2:3]) == [" caf"]                   # another one, from the same place
    cjk = tok("北京", add_special_tokens=False)["input_ids"]
    assert "\ufffd" not in "".join(d.peek(cjk[:-1]))      # a draft ending inside a character: no U+FFFD
    assert "".join(d.push(ids[1:]) + [d.flush()]) == " world café"


@pytest.mark.parametrize("method", ["clasp", "vanilla"])
def test_a_run_s_pieces_concatenate_to_its_decoded_output(embedded, method):
    cfg = GenConfig(num_skip=8, draft_len=4, det=0.0, max_new_tokens=24)
    events = list(generate(embedded, MIXED, cfg, method))
    done = events[-1]
    pieces = [events[0].first_text]
    for e in events:
        if isinstance(e, Step):
            pieces.append(e.text)
        elif isinstance(e, Round):
            n = len(e.emitted)
            pieces += e.drafted_text[:min(e.accepted, n)] + ([e.next_text] if n > e.accepted else [])
            assert len(e.drafted_text) == len(e.drafted)
    out = decoded(embedded.tokenizer, done.output_ids)
    assert "".join(pieces) + done.tail_text == out
    assert any("\u4e00" <= ch <= "\u9fff" for ch in out)               # it did write CJK
    assert not any("\ufffd" in p for p in pieces)
    if method == "clasp":
        assert done.drafted > done.accepted > 0
