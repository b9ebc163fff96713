# ---
# jupyter:
#   bitnet_lab:
#     requires: []
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
# # 09 · Speculative decoding: several tokens per pass, the same tokens out
#
# Decode reads every weight once per generated token. Speculative decoding gets more than one
# token out of a pass: a cheap **drafter** guesses the next k tokens, the model runs the current
# token and the k guesses in **one** batched forward pass, and keeps the longest prefix of guesses
# it agrees with. The KV cache is then **rolled back** past the first wrong guess — positions and
# cache pages are reused, nothing is encoded again.
#
# **What you will learn**
#
# 1. what a drafter proposes: prompt lookup (n-gram matches in the prompt and the text so far);
# 2. one speculative step by hand: the batched verification pass, the target's choice at every
#    drafted position, the accepted prefix and the rollback, coloured token by token;
# 3. why it is lossless: the rows of a batched pass are the bits a single-token step gives (the
#    engine's prefill = decode promise), and the sampler sees plain decode's history at every
#    position — checked here with drafts that are all wrong too;
# 4. a whole generation with `generate(..., draft="lookup:3")`: which tokens came from a draft,
#    the acceptance rate and tokens per pass, and the lossless check against plain decode.
#
# The code is `bitnet_lab.generate.speculative`; the speed it buys (or costs) on this machine is
# what `bitnet-lab bench --spec` measures (docs/benchmarks.md).

# %% [markdown]
# ## Parameters
#
# `MODEL = None` uses the embedded default model (trained on the CPython standard library). The
# prompt asks it to write a standard-library function again — the kind of text where prompt
# lookup finds a lot to copy (it is one prompt of the edit workload `bench --spec` ships).

# %% tags=["parameters"]
MODEL = None          # None → the embedded default model; or a .gguf path, an HF folder, a Hub repo id
N_TOKENS = 40         # tokens to generate in section 3
DRAFT_MAX = 8         # the most tokens one pass verifies
WORKLOAD_ITEM = 0     # which prompt of the shipped edit workload

# %%
import html

import numpy as np

import bitnet_lab
from bitnet_lab.bench.speculative import edit_workload
from bitnet_lab.generate import DoneEvent, TokenEvent, generate, make_sampler
from bitnet_lab.generate.speculative import Draft, PromptLookup, verify_step
from bitnet_lab.tools.default_model import default_model_path

source = default_model_path() if MODEL is None else MODEL
model = bitnet_lab.load(source, threads=1)
tok, runner = model.tokenizer, model.runner
greedy = make_sampler(temp=0)
PROMPT = edit_workload("edit")[WORKLOAD_ITEM]["prompt"]
print(model)
print(PROMPT)


def piece(t: int) -> str:
    return tok.token_to_piece(int(t))


def coloured(parts) -> None:
    """Tokens as coloured spans in a notebook (green: drafted and accepted, red: drafted and
    rejected, grey: the target's own), and as text with markers everywhere else."""
    colours = {"accepted": "#b7e4b7", "rejected": "#f4b6b6", "target": "#e6e6e6"}
    marks = {"accepted": "+", "rejected": "x", "target": ""}
    print(" ".join(f"{marks[kind]}{piece(t)!r}" for t, kind in parts))
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        return
    if get_ipython() is not None:
        spans = "".join(f"<span style='background:{colours[kind]};white-space:pre;font-family:monospace'>"
                        f"{html.escape(piece(t))}</span>" for t, kind in parts)
        display(HTML(f"<div>{spans}</div>"))


# %% [markdown]
# ## 1. Plain decode: the tokens we must reproduce
#
# Greedy decoding, one forward pass per token.

# %%
plain = list(generate(model, PROMPT, n=N_TOKENS, sampler=greedy, stop_ids=()))
plain_done = plain[-1]
assert isinstance(plain_done, DoneEvent)
print(plain_done.generated_text)
print(f"{plain_done.n_eval} tokens fed in {plain_done.n_pass} passes")

# %% [markdown]
# ## 2. One speculative step by hand
#
# Feed the prompt, take the model's next token (the *current* token: chosen, not yet fed), and
# ask prompt lookup for up to `DRAFT_MAX` tokens to follow it: the tokens that followed the
# latest earlier occurrence of the last 3 (or 2, or 1) tokens.

# %%
ids = tok.encode(PROMPT)
cache = runner.new_cache(model.config.context)
row = runner.forward(ids, cache, last_only=True)[-1]
current = int(np.argmax(row))
context = list(ids)
drafter = PromptLookup(3)
draft = drafter.propose(context + [current], DRAFT_MAX)
print(f"cache holds {cache.pos} tokens; current token {piece(current)!r}")
print(f"drafts ({len(draft)}): {[piece(t) for t in draft.tokens]}")

# %% [markdown]
# `verify_step` runs `[current] + drafts` through the model in one forward pass — k+1 rows of
# logits — and walks the drafts: at each position the sampler (greedy here) picks the target's
# token with plain decode's history; equal to the draft → accepted, else that token is the
# *correction* and the walk stops. The cache is then truncated to just after the accepted drafts.

# %%
pos0 = cache.pos
step = verify_step(runner, cache, context, current, draft, greedy, np.random.default_rng(0))
print(f"pass over {len(step.fed)} positions starting at cache position {step.pos0}")
print(f"{'pos':>4}  {'fed':>14}  {'target picks':>14}  verdict")
for j, d in enumerate(step.drafts):
    pick = int(np.argmax(step.rows[j]))
    verdict = "accepted" if j < len(step.accepted) else ("rejected" if j == len(step.accepted) else "(not looked at)")
    print(f"{step.pos0 + 1 + j:>4}  {piece(d)!r:>14}  {piece(pick)!r:>14}  {verdict}")
print(f"accepted {len(step.accepted)} of {len(step.drafts)}; correction: "
      f"{piece(step.correction)!r}" if step.correction is not None else "all accepted: the next token comes from the last row")
print(f"cache: {pos0} before, {pos0 + len(step.fed)} during the pass, {cache.pos} after the rollback")
coloured([(current, "target")] + [(t, "accepted") for t in step.accepted]
         + ([(step.drafts[len(step.accepted)], "rejected")] if step.correction is not None else [])
         + ([(step.correction, "target")] if step.correction is not None else []))

# %% [markdown]
# ### The rows are plain decode's, bit for bit
#
# A fresh cache, the same prompt, then single-token steps over the tokens this pass kept: each
# step's logits must equal the pass's row at that position as 32-bit patterns — not close, equal.
# Then the same with drafts that are **all wrong** (each the right token + 1): nothing is
# accepted, the cache is rolled back to just after the current token, and decoding goes on from
# there exactly as plain decode does.

# %%
def single_steps(tokens):
    c = runner.new_cache(model.config.context)
    runner.forward(ids, c, last_only=True)
    return [runner.forward([t], c)[-1].copy() for t in tokens]


kept = [current] + step.accepted
singles = single_steps(kept)
same_bits = all(step.rows[j].view(np.uint32).tobytes() == singles[j].view(np.uint32).tobytes()
                for j in range(len(kept)))
print(f"rows of the pass == single steps, bit for bit: {same_bits}")

truth = list(plain_done.token_ids)
wrong = Draft(tuple((t + 1) % model.config.vocab for t in truth[1:1 + DRAFT_MAX]))
cache2 = runner.new_cache(model.config.context)
runner.forward(ids, cache2, last_only=True)
bad = verify_step(runner, cache2, list(ids), truth[0], wrong, greedy, np.random.default_rng(0))
print(f"all-wrong drafts: accepted {len(bad.accepted)}, correction {piece(bad.correction)!r} "
      f"(plain decode's next token: {piece(truth[1])!r}); cache after the rollback: {cache2.pos}")
after = [runner.forward([t], cache2)[-1].copy() for t in truth[1:6]]
replay = single_steps(truth[:6])[1:]
after_bits = all(a.view(np.uint32).tobytes() == b.view(np.uint32).tobytes() for a, b in zip(after, replay))
print(f"steps after the rollback == plain decode's, bit for bit: {after_bits}")
coloured([(truth[0], "target"), (wrong.tokens[0], "rejected"), (bad.correction, "target")])

# %% [markdown]
# ## 3. A whole generation with prompt lookup
#
# `generate(..., draft="lookup:3", draft_max=…)` runs the same step in a loop, with an adaptive
# draft length (longer while drafts are accepted, shorter — and for a while none — when they are
# not). Each `TokenEvent` says whether it was `drafted` and which pass (`n_pass`) produced it;
# the `DoneEvent` counts drafts, acceptances and passes.

# %%
spec = list(generate(model, PROMPT, n=N_TOKENS, sampler=greedy, stop_ids=(), draft="lookup:3",
                     draft_max=DRAFT_MAX))
spec_done = spec[-1]
spec_tokens = [e for e in spec if isinstance(e, TokenEvent)]
coloured([(e.token_id, "accepted" if e.drafted else "target") for e in spec_tokens])
print(f"{spec_done.n_draft} drafted, {spec_done.n_accept} accepted ({100 * spec_done.acceptance_rate:.0f} %), "
      f"{spec_done.n_eval} tokens in {spec_done.n_pass} passes ({spec_done.tokens_per_pass:.2f} per pass)")
print(f"eval: plain {plain_done.eval_ms:.1f} ms, speculative {spec_done.eval_ms:.1f} ms (one run each, on this "
      "machine's load; bench --spec measures it properly)")

# %% [markdown]
# Pass by pass: every pass over the weights yields the target's own token, plus the drafts it
# accepted before it (green). Runs of copied text show up as tall bars; where there is nothing to
# look up, the adaptive draft length falls back to one token per pass.

# %%
from collections import Counter

import matplotlib.pyplot as plt

per_pass = Counter(e.n_pass for e in spec_tokens)
drafted_per_pass = Counter(e.n_pass for e in spec_tokens if e.drafted)
passes = sorted(per_pass)
own = [per_pass[p] - drafted_per_pass[p] for p in passes]
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.bar(range(len(passes)), own, color="#4c72b0", label="the target's own token")
ax.bar(range(len(passes)), [drafted_per_pass[p] for p in passes], bottom=own, color="#55a868",
       label="accepted drafts")
ax.set(xlabel="pass over the weights", ylabel="tokens", title="tokens per pass, prompt lookup")
ax.legend(loc="upper right")
plt.show()

# %% [markdown]
# ## 4. Checks
#
# The lossless promise, checked: the speculative tokens and text are plain decode's, the rows of a
# verification pass and the steps after a rollback are single-step decode's bit for bit, every
# drafted token shown was really accepted, and the counters add up.

# %%
assert spec_done.token_ids == plain_done.token_ids, "speculative decoding changed a token"
assert spec_done.generated_text == plain_done.generated_text
assert same_bits and after_bits, "a verification row or a step after the rollback differs from plain decode"
assert len(bad.accepted) == 0 and bad.correction == truth[1] and cache2.pos == len(ids) + 1 + 5
assert cache.pos == pos0 + 1 + len(step.accepted)
assert sum(e.drafted for e in spec_tokens) == spec_done.n_accept <= spec_done.n_draft
assert spec_done.n_eval == plain_done.n_eval and spec_done.n_pass <= spec_done.n_eval
print("all checks passed")
