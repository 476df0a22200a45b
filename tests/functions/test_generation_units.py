"""The pieces of the generation runtime that need no model: incremental decoding, stop strings,
chat templates and request options."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.errors import BadRequest, BundleError
from functions.generation.chat import ChatTemplate, parse_messages
from functions.generation.detokenize import IncrementalDecoder
from functions.generation.options import sampling
from functions.generation.stops import StopStrings
from tests.genbundles import CHATML_TEMPLATE, lm_tokenizer

TEXTS = [
    "hello world! how are you today?",
    "emoji 🙂🚀 and skin tones 👍🏽 with a heart ❤️ at the end",
    "東京は日本の首都です。你好，世界",
    "mixed: café 🙂 東京 naïve 👍🏽!",
    "🙂",
]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tokenizer(request):
    return lm_tokenizer(request.param)[0]


def _pieces(tokenizer, ids, prompt_ids=()):
    decoder = IncrementalDecoder(tokenizer, prompt_ids)
    pieces = [decoder.push(i) for i in ids]
    return pieces + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_concatenate_to_the_decoded_text_and_are_complete_characters(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    pieces = _pieces(tokenizer, ids)
    assert "".join(pieces) == tokenizer.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    # Characters outside the vocabulary really span several tokens here (byte fallback / byte level).
    if not text.isascii():
        assert len(ids) > len(text.split()) and pieces.count("") > 0


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab c.東京🙂👍🏽é\n")), min_size=1, max_size=40),
       cut=st.integers(min_value=0, max_value=40))
def test_any_text_continuing_any_prompt_streams_exactly(text, cut):
    for family in ("llama", "qwen2"):
        tok = lm_tokenizer(family)[0]
        ids = tok.encode(text, add_special_tokens=False).ids
        split = min(cut, len(ids))
        prompt, generated = ids[:split], ids[split:]
        pieces = _pieces(tok, generated, prompt)
        full, head = tok.decode(ids), tok.decode(prompt)
        if "\ufffd" not in head:  # a real prompt is whole characters; the answer is what they continue with
            assert full.startswith(head) and "".join(pieces) == full[len(head):]
            assert all("\ufffd" not in p for p in pieces)


def test_invalid_bytes_are_held_until_the_end_then_flushed():
    tok = lm_tokenizer("llama")[0]
    lead = tok.token_to_id("<0xE6>")  # a lone UTF-8 lead byte that nothing completes
    decoder = IncrementalDecoder(tok)
    assert decoder.push(lead) == ""
    assert decoder.flush() == "\ufffd"


def _stream_through(stops, pieces):
    matcher = StopStrings(stops)
    out = [matcher.feed(p) for p in pieces]
    out.append(matcher.flush())
    return out, matcher.stopped


def test_stop_split_across_pieces_is_cut_and_never_shown():
    out, stopped = _stream_through(["STOP"], ["hello S", "T", "O", "P and more"])
    assert stopped and "".join(out) == "hello " and not any("S" in p for p in out)


def test_partial_stop_that_does_not_complete_is_released():
    out, stopped = _stream_through(["STOP"], ["hello ST", "ILL going"])
    assert not stopped and "".join(out) == "hello STILL going"
    assert out[0] == "hello "  # "ST" was held while it could still become "STOP"


def test_earliest_of_several_stops_wins():
    out, stopped = _stream_through(["world", "lo w"], ["hel", "lo world"])
    assert stopped and "".join(out) == "hel"
    # "a" matches first in the pieces, but "baa" starts earlier in the whole text.
    out, stopped = _stream_through(["a", "baa"], ["ba", "a"])
    assert stopped and "".join(out) == ""


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="abc", max_size=30), stops=st.lists(st.text(alphabet="abc", min_size=1, max_size=4),
                                                                   min_size=1, max_size=4),
       cuts=st.lists(st.integers(min_value=0, max_value=30), max_size=6))
def test_stops_cut_any_split_text_like_cutting_the_whole(text, stops, cuts):
    bounds = sorted({0, len(text), *[min(c, len(text)) for c in cuts]})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:])]
    out, stopped = _stream_through(stops, pieces)
    hits = [text.find(s) for s in stops if s in text]
    # A stop found in the whole text cuts at the first one; split pieces must give the same.
    expected = text[:min(hits)] if hits else text
    assert "".join(out) == expected and stopped == bool(hits)


# -- chat templates ---------------------------------------------------------------------------
def test_chat_template_renders_with_generation_prompt_and_special_tokens():
    template = ChatTemplate("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
                            "{% if add_generation_prompt %}[assistant]{% endif %}{{ 'x' | tojson }}",
                            bos_token="<s>", eos_token="</s>")
    assert template.render([{"role": "user", "content": "hi 🙂"}]) == '<s>[user]hi 🙂[assistant]"x"'


def test_chat_template_raise_exception_is_a_400_with_one_line():
    template = ChatTemplate(CHATML_TEMPLATE)
    with pytest.raises(BadRequest, match="rejected the messages: unsupported role: tool") as err:
        template.render([{"role": "tool", "content": "x"}])
    assert "\n" not in str(err.value)


def test_chat_template_is_sandboxed():
    template = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(BundleError, match="chat template failed"):
        template.render([{"role": "user", "content": "x"}])
    mutating = ChatTemplate("{% set _ = messages.append(1) %}ok")
    with pytest.raises(BundleError, match="SecurityError"):
        mutating.render([{"role": "user", "content": "x"}])


def test_broken_chat_template_is_a_bundle_error():
    with pytest.raises(BundleError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


@pytest.mark.parametrize("messages, fragment", [
    (None, "non-empty array"), ([], "non-empty array"), (["hi"], "messages[0] must be an object"),
    ([{"role": "robot", "content": "x"}], "messages[0].role must be one of"),
    ([{"role": "user", "content": 3}], "messages[0].content must be a string"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "text part"),
    ([{"role": "user", "content": "x", "tool_calls": []}], "unsupported field 'tool_calls'"),
])
def test_bad_messages_are_named(messages, fragment):
    with pytest.raises(BadRequest, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_messages(messages)


def test_text_parts_are_joined():
    parsed = parse_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                             {"role": "assistant", "content": None}])
    assert parsed == [{"role": "user", "content": "ab"}, {"role": "assistant", "content": ""}]


@pytest.mark.parametrize("body, fragment", [
    ({"max_tokens": 0}, "max_tokens must be an integer"), ({"max_tokens": "5"}, "max_tokens must be an integer"),
    ({"temperature": 2.5}, "temperature must be a number"), ({"temperature": True}, "temperature must be a number"),
    ({"top_p": 0}, "top_p must be a number greater than 0"), ({"top_k": -1}, "top_k must be an integer"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"), ({"stop": [""]}, "non-empty string"),
    ({"stop": 5}, "non-empty string"), ({"seed": 1.5}, "seed must be an integer"),
    ({"repetition_penalty": 0}, "repetition_penalty must be a number"),
])
def test_bad_sampling_fields_are_named(body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        sampling(body, max_tokens_key="max_tokens", max_tokens_default=None)


def test_sampling_defaults_follow_openai():
    options = sampling({"stop": "x"}, max_tokens_key="max_tokens", max_tokens_default=None)
    assert (options.temperature, options.top_p, options.top_k, options.stop, options.greedy) == (1.0, 1.0, 0, ("x",), False)
