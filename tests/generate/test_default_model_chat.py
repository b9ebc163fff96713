"""The shipped default model in a chat (issue 18, item 20): its chat template ends an assistant turn
with the model's end token, and greedy answers to questions about modules it was never taught
(held out by scripts/build_chat_corpus.py) end with that token within 128 tokens — most of them:
the model card measures 94.5 % for the shipped stage 4 (87.5 % stage 3, 78 % before the copy
fine-tune), so the test asks 12 fixed questions and wants at least 8 ended — as do the questions
suggested for the README and notebook 06.

The model before the chat fine-tune has no template (chat falls back to chatml, whose end
marker is text) and answers every one of these questions with 128 tokens of junk.
"""

from __future__ import annotations

import pytest

import bitnet_lab
from bitnet_lab.generate import DoneEvent, TokenEvent, make_sampler
from bitnet_lab.generate.chat import ChatSession, chat_format_for
from bitnet_lab.tools.default_model import shipped_model_path

MAX_TOKENS = 128

# (system prompt, question), all about modules in the held-out split of scripts/build_chat_corpus.py,
# fixed before the shipped model was measured: four picked by hand (statistics, re, queue, zipfile;
# both kinds of question, with and without a system prompt), then the first eight of the seeded
# sample the model card's figure uses (`build_chat_corpus.py --eval`, seed 0).
HELD_OUT = [
    (None, "What does `statistics.median` do?"),
    ("You are a helpful assistant.", "Show me the signature of `re.sub`."),
    (None, "What is the `queue` module for?"),
    (None, "How do I call `zipfile.is_zipfile`?"),
    (None, "Tell me about `tkinter.Wm.wm_iconposition`."),
    (None, "What arguments does `tkinter.Canvas.itemconfigure` take?"),
    (None, "How do I call `email.base64mime.header_encode`?"),
    ("You are an expert on the Python standard library.", "What is the signature of `re.subn`?"),
    ("You are a helpful assistant.", "Show me the signature of tkinter.PanedWindow.add."),
    (None, "How do I call `tkinter.Text.tag_delete`?"),
    (None, "What arguments does `tkinter.Canvas.addtag_withtag` take?"),
    (None, "What does the method `tkinter.Variable.trace_add` do?"),
]
# The model card measures 78 % (stage 2), 87.5 % (stage 3) and 94.5 % (the shipped stage 4) on 200
# held-out questions; stages 2 and 3 end 10 of these 12, stage 4 all 12.
MIN_ENDED = 8

# The questions suggested for the README and notebook 06 (chosen after measuring: the model ends
# them cleanly; what it answers is seldom right), with the README's system prompt.
SUGGESTED = [
    "What does `os.makedirs` do?",
    "What does `os.walk` do?",
    "What does `textwrap.dedent` do?",
    "Show me the signature of `json.loads`.",
]


def _ask(model, system, question):
    sess = ChatSession(model, system=system, sampler=make_sampler(temp=0))
    events = list(sess.send(question, n=MAX_TOKENS))
    done = events[-1]
    assert isinstance(done, DoneEvent)
    tokens = [ev for ev in events if isinstance(ev, TokenEvent)]
    ended = (done.reason == "eos" and bool(tokens) and tokens[-1].eog
             and tokens[-1].token_id == model.tokenizer.eos_id and len(tokens) <= MAX_TOKENS)
    return ended, done


@pytest.fixture(scope="module")
def model():
    path = shipped_model_path()
    if not path.is_file():
        pytest.skip("no shipped default model (data/default-model.gguf)")
    m = bitnet_lab.load(path)
    yield m
    m.close()


def test_the_template_ends_a_turn_with_the_end_token(model):
    tok = model.tokenizer
    fmt = chat_format_for(tok, model.config)
    assert fmt.name == "template", fmt.why   # the file's own template, not the chatml fallback
    eos = tok.eos_id
    assert eos is not None and eos in fmt.stop_ids
    ids = fmt.encode([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                     add_generation_prompt=False)
    assert ids[0] == tok.bos_id and ids[-1] == eos
    assert ids.count(eos) == 2  # BOS (= EOS in this vocabulary) and the end of the answer, nothing else


def test_held_out_questions_are_answered_and_end_with_the_end_token(model):
    results = [(q, *_ask(model, system, q)) for system, q in HELD_OUT]
    ended = [(q, done) for q, ok, done in results if ok]
    report = "; ".join(f"{q!r}: {done.reason} after {done.n_generated}" for q, ok, done in results if not ok)
    assert len(ended) >= MIN_ENDED, f"{len(ended)} of {len(HELD_OUT)} answers ended with the end token: {report}"
    assert all(done.generated_text.strip() for _, done in ended), "an empty answer"


@pytest.mark.parametrize("question", SUGGESTED)
def test_the_suggested_questions_end_with_the_end_token(model, question):
    ok, done = _ask(model, "You are a helpful assistant.", question)
    assert ok and done.generated_text.strip(), f"{done.reason} after {done.n_generated}: {done.generated_text[:200]!r}"
