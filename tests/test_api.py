"""The Python API a user meets first (issue 18 items 1, 17, 19): `bitnet_lab.load()` with no
argument, llama.cpp-style sampler keywords in `Model.generate`, the README's snippet verbatim,
`threads=` checked and clamped, `logits()` refusing what is not a sequence of token ids."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import bitnet_lab
from bitnet_lab.errors import BitnetLabError, ConfigError

ROOT = Path(__file__).resolve().parents[1]

# What the README shows (used when the README has no python block that loads a model).
SNIPPET = '''\
import bitnet_lab as bl
model = bl.load()                      # the embedded default model; or a path / Hub repo id
for ev in model.generate('def read_lines(path):\\n    """Return', n=64, temp=0.6):
    print(ev.text, end="")
'''


def readme_snippet() -> str:
    """The README's ```python block that loads a model, verbatim (else the literal above)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        if ".load(" in block and ".generate(" in block:
            return block
    return SNIPPET


@pytest.fixture(scope="module")
def default_model():
    with bitnet_lab.load() as m:
        yield m


# ---- item 1: the README's snippet, the default model, sampler keywords -------------------------

def test_readmes_python_snippet_prints_the_text_once(tmp_path):
    """Run the snippet as a user would; a small observer (installed before it, not changing it)
    records what the generation produced, and stdout must be exactly that, once."""
    snippet = readme_snippet()
    observer = textwrap.dedent('''\
        import atexit, sys
        import bitnet_lab.model as _m
        _seen = []
        _orig = _m.Model.generate
        def _generate(self, *a, **kw):
            for ev in _orig(self, *a, **kw):
                _seen.append(ev)
                yield ev
        _m.Model.generate = _generate
        atexit.register(lambda: sys.stderr.write("\\n@@GENERATED@@" + repr(_seen[-1].generated_text)))
        ''')
    script = tmp_path / "snippet.py"
    script.write_text(observer + "\n" + snippet, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), BITNET_LAB_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    generated = eval(r.stderr.rsplit("@@GENERATED@@", 1)[1])  # noqa: S307 (our own repr)
    assert generated.strip(), "the default model generated nothing"
    assert r.stdout == generated
    half = len(r.stdout) // 2
    assert r.stdout[:half] != r.stdout[half:]


def test_the_snippet_runs_verbatim_without_the_observer(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), BITNET_LAB_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-c", readme_snippet()], capture_output=True, text=True, timeout=300,
                       env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert out.strip() and not (len(out) % 2 == 0 and out[: len(out) // 2] == out[len(out) // 2:])
    assert r.stderr == ""   # nothing else: no warnings, no progress


def test_done_event_text_is_empty_and_generated_text_is_the_whole_generation(default_model):
    events = list(default_model.generate("def f(x):\n    return", n=12, temp=0, seed=1))
    done = events[-1]
    assert done.text == ""
    assert done.generated_text == "".join(e.text for e in events) != ""


def test_load_without_a_source_is_the_embedded_default_model():
    from bitnet_lab.tools.default_model import default_model_path

    with bitnet_lab.load() as a, bitnet_lab.load("default") as b:
        assert a.source == b.source == default_model_path()
        assert a.config == b.config


def test_a_file_named_default_is_reached_as_a_path(tmp_path, monkeypatch, tiny_gguf):
    (tmp_path / "default").write_bytes(tiny_gguf.read_bytes())
    monkeypatch.chdir(tmp_path)
    with bitnet_lab.load("./default") as m:
        assert m.source == Path("default")


def test_generate_takes_llama_cpp_sampler_keywords(default_model):
    from bitnet_lab.generate import make_sampler

    prompt = "import os\n"

    def ids(**kw):
        return list(default_model.generate(prompt, n=16, **kw))[-1].token_ids

    greedy = ids(temp=0)
    assert greedy == ids(sampler=make_sampler(temp=0))
    chain = dict(temp=0.9, top_k=20, top_p=0.9, min_p=0.02, repeat_penalty=1.2, repeat_last_n=32)
    assert ids(seed=7, **chain) == ids(seed=7, sampler=make_sampler(**chain))
    assert ids(seed=7, **chain) == ids(seed=7, **chain)
    with pytest.raises(ConfigError, match="sampler= or the sampler keywords"):
        default_model.generate(prompt, sampler=make_sampler(), temp=0)
    with pytest.raises(TypeError, match="tempreature"):
        default_model.generate(prompt, tempreature=0)


# ---- item 17: threads ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [True, False, 0, -1, 1.5, "2"])
def test_threads_must_be_a_positive_int(bad, tiny_gguf):
    with pytest.raises(ConfigError, match="threads"):
        bitnet_lab.load(tiny_gguf, threads=bad)


@pytest.mark.parametrize("many", [100000, 2**31, 2**70])
def test_threads_above_the_allowed_cpus_are_clamped_with_one_warning(many, tiny_gguf):
    from bitnet_lab.kernels import allowed_cpus

    n_cpus = len(allowed_cpus())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bitnet_lab.load(tiny_gguf, threads=many) as m:
            assert m.threads == n_cpus
            assert m.runner.threads == n_cpus
            list(m.generate("x", n=2, temp=0))
    msgs = [str(w.message) for w in caught if "threads" in str(w.message)]
    assert len(msgs) == 1 and str(many) in msgs[0] and str(n_cpus) in msgs[0], msgs


def test_threads_within_the_cpus_pass_silently(tiny_gguf):
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bitnet_lab.load(tiny_gguf, threads=np.int64(1)) as m:
            assert m.threads == 1 and type(m.threads) is int


# ---- item 19: logits of what is not a sequence of token ids ------------------------------------

@pytest.mark.parametrize("bad", [None, 5, "abc", [[1, 2]], [1.5]])
def test_logits_refuses_what_is_not_token_ids(default_model, bad):
    with pytest.raises(BitnetLabError, match="token ids"):
        default_model.logits(bad)


def test_logits_names_an_id_outside_the_vocabulary(default_model):
    with pytest.raises(BitnetLabError, match="outside the vocabulary"):
        default_model.logits([1, default_model.config.vocab])
    assert default_model.logits([1, 2, 3]).shape == (3, default_model.config.vocab)
