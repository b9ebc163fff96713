# ---
# jupyter:
#   bitnet_lab:
#     requires:
#     - matplotlib
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: bitnet_lab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Interactive inference: generation you can watch, token by token
#
# Everything so far was one forward pass. Generation is a loop around it: run the model, turn
# the last row of logits into a probability distribution, **sample** one token, feed it back,
# repeat — with a KV cache so each step only processes the new token.
#
# **What you will learn**
#
# 1. how to load a model: the embedded default, a local file, or a Hugging Face Hub id;
# 2. how `bitnet_lab.generate` streams **events** (token id, text, log-probability, time) and
#    ends with a summary (prompt and generation tokens/s);
# 3. what the sampler does at every step: the model's top candidates as a bar chart, which of
#    them top-k / top-p / min-p keep, and which one was drawn — reproduced exactly by hand with
#    `model.runner.forward`;
# 4. where the time goes per token (the first token pays for the whole prompt);
# 5. how a chat works: the model's chat format, and a multi-turn session that keeps its KV
#    cache — in a chat box with sampling sliders and a live tokens/s counter (run headless, it
#    plays a scripted two-turn chat as text).
#
# The loop, the samplers and the chat formats are bitnet_lab's (`bitnet_lab.generate`,
# `bitnet_lab.generate.chat`); the chat box is `bitnet_lab.notebook.widgets.chat`.

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model: a 5.8 M-parameter BitNet b1.58 model this
# project trained on the CPython standard library (`data/MODEL_CARD.md`). It continues Python
# code and docstrings in the standard library's style and knows nothing else, so the prompt
# below is the start of a function; every step below is what a big model does too. Set `MODEL`
# to a GGUF file, a Hugging Face checkpoint folder, or a Hub repo id — for example
# `"microsoft/bitnet-b1.58-2B-4T-gguf"` — to talk to a large trained model. A Hub id needs the
# network the first time (then the local Hugging Face cache; `HF_HUB_OFFLINE=1` forbids
# downloads and fails with a clear error if the file is not cached).
#
# Sampling settings are llama.cpp's flags: `TEMP` (0 = greedy), `TOP_K`, `TOP_P`, `MIN_P`.

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
PROMPT = 'def read_lines(path):\n    """Return'
N_TOKENS = 24         # tokens to generate in sections 1–3
SEED = 1234           # the sampler's random seed (same seed, same tokens)
TEMP, TOP_K, TOP_P, MIN_P = 0.8, 40, 0.95, 0.05
SHOW_TOP = 10         # candidates shown per step
# the scripted chat turns: questions of the kind the default model was fine-tuned on (it learned
# the form of a chat and its end token, not the facts: answers look right more than they are)
SCRIPT = ["What does `os.makedirs` do?", "Show me the signature of `json.loads`."]
CHAT_TOKENS = 48      # max tokens per chat answer

# %%
import numpy as np

import bitnet_lab
from bitnet_lab.notebook import viz
from bitnet_lab.notebook import widgets
from bitnet_lab.generate.chat import chat_format_for
from bitnet_lab.tools.default_model import default_model_path
from bitnet_lab.generate import Candidates, DoneEvent, TokenEvent, generate, make_sampler

source = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(source)       # the native engine; backend="reference" runs the JAX judge instead
tok = model.tokenizer
print(model)
print(f"tokenizer: {tok.vocab_size} tokens; BOS {model.config.bos_id}, EOS {model.config.eos_id}")

# %% [markdown]
# ## 1. Streaming generation
#
# `generate(model, prompt, n=…, sampler=…, seed=…)` returns an iterator: nothing runs until
# you ask for the next event. Each `TokenEvent` carries the token id, the text it releases (a
# token can end in the middle of a UTF-8 character, so the text may come a token later), its
# log-probability under the model and the time it took; the final `DoneEvent` has the counters.
# The loop below prints the text as it arrives — in a notebook you watch it appear.

# %%
sampler = make_sampler(temp=TEMP, top_k=TOP_K, top_p=TOP_P, min_p=MIN_P)
print(f"sampler: {sampler.name}")
print(PROMPT, end="", flush=True)
events = []
for ev in generate(model, PROMPT, n=N_TOKENS, sampler=sampler, seed=SEED):
    events.append(ev)
    if isinstance(ev, TokenEvent):
        print(ev.text, end="", flush=True)
print()
done = events[-1]
token_events = [e for e in events if isinstance(e, TokenEvent)]
assert isinstance(done, DoneEvent)
print(f"\n{done.n_generated} tokens, stopped: {done.reason}; prompt: {done.n_prompt} tokens in {done.prompt_ms:.1f} ms "
      f"({done.prompt_tokens_per_s:.0f} tokens/s); generation: {done.n_eval} steps in {done.eval_ms:.1f} ms "
      f"({done.eval_tokens_per_s:.1f} tokens/s); sampling {done.sample_ms:.1f} ms")
print(viz.table([(i, e.token_id, repr(tok.token_to_piece(e.token_id)), f"{e.logprob:.3f}", f"{e.t_ms:.2f}")
                 for i, e in enumerate(token_events[:8])],
                ["step", "token id", "piece", "log p", "ms"]))

# %% [markdown]
# ## 2. What the sampler sees, step by step
#
# Now the same generation by hand, with the engine's forward interface: `new_cache`, one
# `forward` over the prompt, then one `forward` per token. At each step the sampler chain
# (llama.cpp's order: top-k → top-p → min-p → temperature → draw) narrows the candidates and
# draws one with a `numpy` generator seeded like `generate`'s — so the tokens must come out
# identical. We keep each step's logits to look at the distribution.

# %%
ids = tok.encode(PROMPT)                              # what generate() encodes (the tokenizer's BOS rule)
runner = model.runner
cache = runner.new_cache(len(ids) + N_TOKENS)
rng = np.random.default_rng(SEED)
row = np.asarray(runner.forward(ids, cache))[-1]      # (vocab,) logits of the first new token
context, steps = list(ids), []
for i in range(len(token_events)):
    kept = set(sampler.candidates(row, context).ids.tolist())   # what the filters leave
    chosen = sampler.sample(row, context, rng)
    steps.append({"logits": row, "kept": kept, "chosen": chosen})
    context.append(chosen)
    if i + 1 < len(token_events):                     # generate() never feeds its last token
        row = np.asarray(runner.forward([chosen], cache))[-1]
by_hand = [s["chosen"] for s in steps]
print(f"tokens by hand: {by_hand[:10]} …")
print(f"tokens of generate(): {[e.token_id for e in token_events][:10]} …; identical: "
      f"{by_hand == [e.token_id for e in token_events]}")


def step_view(step):
    """The model's most likely next tokens at one step, and the sampler's choice."""
    s = steps[step]
    p = Candidates.from_logits(s["logits"]).probs()   # softmax over the whole vocabulary (float64)
    top = np.argsort(-p, kind="stable")[:SHOW_TOP]
    where = np.flatnonzero(top == s["chosen"])
    rank = int((p > p[s["chosen"]]).sum()) + 1          # 1 = the most likely token
    print(f"step {step}: sampled {s['chosen']} {tok.token_to_piece(s['chosen'])!r} "
          f"(p = {100 * p[s['chosen']]:.2f} %, rank {rank}); the filters kept {len(s['kept'])} of {p.size} tokens")
    label = lambda i: f"{int(i)} {tok.token_to_piece(int(i))!r}"  # noqa: E731
    viz.show(viz.token_probs([label(i) for i in top], p[top],
                             kept=[int(i) in s["kept"] for i in top], chosen=int(where[0]) if where.size else -1,
                             sampled=(label(s["chosen"]), p[s["chosen"]], rank, s["chosen"] in s["kept"]),
                             title=f"step {step}: the {SHOW_TOP} most likely next tokens"
                                   + ("" if where.size else ", and the sampled one")))


widgets.explore(step_view, step=range(len(steps)))

# %% [markdown]
# Where the code is predictable (a keyword, a closing bracket, the rest of a name) the model
# puts most of the mass on one or two tokens and the filters keep few; where many continuations
# are plausible the distribution is flatter, top-p and min-p keep more tokens, and a draw can
# land outside the ten most likely (it then gets a row of its own below the others, with its
# rank). Try `TEMP = 0` (greedy: always the top bar) or a small `TOP_K` and re-run.
#
# The event's `logprob` is the log of the raw probability of the sampled token (before any
# filter), so it can be recomputed from the logits kept above:

# %%
logp_by_hand = np.array([np.log(Candidates.from_logits(s["logits"]).probs()[s["chosen"]]) for s in steps])
logp_events = np.array([e.logprob for e in token_events])
print(f"max |log p (events) − log p (by hand)| = {np.abs(logp_by_hand - logp_events).max():.2e}")

# %% [markdown]
# ## 3. Time per token
#
# The first token costs the prompt's forward pass (all prompt tokens in one batched call, the
# GEMM kernels); every later token is one decode step (the GEMV kernels) plus sampling. tokens/s
# of the generation = decode steps / their time.

# %%
viz.show(viz.token_timeline([e.t_ms for e in token_events], n_prompt=done.n_prompt,
                            title=f"time per generated token ({model.config.name or 'model'}, native engine)"))

# %% [markdown]
# ## 4. Chat
#
# A chat model was trained on conversations in one format: role headers, end-of-turn tokens.
# `chat_format_for` picks the model's format (an explicit name, the file's own template, the
# family named by the file's pre-tokenizer or name — Falcon3 / Falcon-E — or a rule based on
# the vocabulary; its `why` says which) and turns messages into token ids.

# %%
fmt = chat_format_for(tok, model.config)
print(f"chat format: {fmt.name} — {fmt.why}")
demo = [{"role": "user", "content": SCRIPT[0]}]
print("the first turn as the model reads it:")
print(repr(fmt.render(demo, add_generation_prompt=True)))

# %% [markdown]
# The chat box: type a message, press Enter (or Send), watch the answer stream in; the sliders
# set the sampler for the next answer, and the answer length (at most the context). A
# `ChatSession` keeps the KV cache between turns, so a new turn feeds only its own tokens
# (closing the previous answer, the new user message, the assistant header) — not the whole
# conversation again. When the context is full it shifts, as llama.cpp does: the system prompt
# stays, the oldest half of the rest goes, what is kept is read again, and the chat goes on
# (the counters under the box say when). Headless, the box plays `SCRIPT` instead.

# %%
session = widgets.chat(model, script=SCRIPT, n=CHAT_TOKENS, seed=SEED,
                       sampling={"temp": TEMP, "top_k": TOP_K, "top_p": TOP_P, "min_p": MIN_P})

# %%
whole = session.format.encode(session.messages[:-1], add_generation_prompt=True)  # re-reading everything
print(f"{session!r}")
print(f"the last turn fed {len(session.last_prompt_ids)} new tokens; re-reading the conversation would feed {len(whole)}")
print(f"{session.n_past} of {session.n_ctx} context positions used; the context shifted {session.n_shifts} time(s) "
      f"so far (a shift keeps the first {session.n_keep} tokens)")

# %% [markdown]
# ## 5. Checks
#
# Each assertion can fail: a hand-made loop that does not reproduce `generate()` token for
# token, log-probabilities that disagree with the logits, counters that do not add up, or a
# chat session whose cache and token list drift apart stops this notebook (and CI).

# %%
assert len(token_events) == done.n_generated > 0
assert by_hand == [e.token_id for e in token_events], "the hand-made loop must reproduce generate()"
assert np.allclose(logp_by_hand, logp_events, rtol=0, atol=1e-9)
assert all(s["chosen"] in s["kept"] for s in steps), "a sampled token must survive the filters"
assert done.eval_tokens_per_s > 0 and done.prompt_tokens_per_s > 0
assert done.generated_text == "".join(e.text for e in token_events)
assert len(session.messages) == 2 * len(SCRIPT)
assert [m["role"] for m in session.messages] == ["user", "assistant"] * len(SCRIPT)
assert session.n_past == len(session.tokens), "the KV cache and the session's token list disagree"
assert len(SCRIPT) < 2 or len(session.last_prompt_ids) < len(whole), "a later turn must not re-read the conversation"
print("all checks passed")
