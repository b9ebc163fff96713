"""`bitnet_lab.load`: one entry point from a path or a Hub repo id to a `Model`.

A `Model` carries what was loaded (config, tensors, metadata, tokenizer) and, on demand, a
backend that runs it. The reference (JAX) and the native engine read the *same* tensors, so
they can only differ in arithmetic, never in what they loaded (docs/design.md#the-data-flow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from bitnet_lab.config import ModelConfig
from bitnet_lab.errors import ConfigError, FormatError
from bitnet_lab.tensors import FloatTensor, TernaryWeight

BACKENDS = ("native", "reference")


@dataclass(eq=False)
class Model:
    """A loaded model. ``tensors`` are keyed by GGUF names, shapes in torch order (M, K)."""

    config: ModelConfig
    tensors: dict[str, FloatTensor | TernaryWeight]
    metadata: Mapping[str, Any]
    source: Path
    file_format: str                      # "gguf" | "safetensors"
    backend: str = "native"
    threads: int | None = None
    mmap: bool = True                     # False: weights in anonymous huge pages (load(mmap=False))
    backend_options: dict = field(default_factory=dict)
    _tokenizer: Any = field(default=None, repr=False)
    _runner: Any = field(default=None, repr=False)
    _closer: Any = field(default=None, repr=False)

    # ---- what was loaded --------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer described by the file (GGUF metadata or tokenizer.json next to it)."""
        if self._tokenizer is None:
            from bitnet_lab.tokenizer import Tokenizer

            if self.file_format == "gguf":
                self._tokenizer = Tokenizer.from_metadata(self.metadata)
            else:
                self._tokenizer = Tokenizer.from_file(self.source)
        return self._tokenizer

    def ternary_weights(self) -> dict[str, TernaryWeight]:
        return {k: v for k, v in self.tensors.items() if isinstance(v, TernaryWeight)}

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(t.shape)) for t in self.tensors.values()))

    @property
    def size_bytes(self) -> int:
        return int(sum(t.nbytes for t in self.tensors.values()))

    # ---- running it -------------------------------------------------------------------
    @property
    def runner(self):
        """The backend object implementing the forward interface (new_cache / forward / logits)."""
        if self._runner is None:
            if self.backend == "reference":
                from bitnet_lab.reference import ReferenceModel

                self._runner = ReferenceModel(self.config, self.tensors, **self.backend_options)
            elif self.backend == "native":
                from bitnet_lab.engine.native import NativeEngine

                self._runner = NativeEngine(self.config, self.tensors, threads=self.threads, **self.backend_options)
            else:  # guarded in load(); kept for objects built by hand
                raise ConfigError(f"unknown backend {self.backend!r}; expected one of {BACKENDS}")
        return self._runner

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Full forward from an empty cache: float32 logits of shape (T, vocab)."""
        from bitnet_lab.backend import check_token_ids

        check_token_ids(ids, self.config.vocab)   # a clear error for None, 5, "text", floats, bad ids
        return self.runner.logits(ids)

    def generate(self, prompt: str | Sequence[int], *, temp: float | None = None, top_k: int | None = None,
                 top_p: float | None = None, min_p: float | None = None, repeat_penalty: float | None = None,
                 repeat_last_n: int | None = None, frequency_penalty: float | None = None,
                 presence_penalty: float | None = None, **kwargs: Any) -> Iterator[Any]:
        """Stream generation events (see bitnet_lab.generate.generate); never prints.

        The sampler is either ``sampler=`` (a `SamplerChain`) or llama.cpp's knobs by name —
        ``temp`` (0 = greedy), ``top_k``, ``top_p``, ``min_p``, ``repeat_penalty``,
        ``repeat_last_n``, ``frequency_penalty``, ``presence_penalty`` — with llama.cpp's
        defaults for the ones not given (`bitnet_lab.generate.make_sampler`); ``seed=`` makes it
        reproducible. ``draft=``: speculative decoding ("lookup:N", "self:N", a draft model's
        path, or a drafter; `bitnet_lab.generate.speculative`). Each `TokenEvent` carries the
        text it releases and the final `DoneEvent`
        none (its ``generated_text`` has the whole), so printing ``ev.text`` for every event
        prints the generation once.
        """
        from bitnet_lab.generate.loop import generate

        knobs = {k: v for k, v in (("temp", temp), ("top_k", top_k), ("top_p", top_p), ("min_p", min_p),
                                   ("repeat_penalty", repeat_penalty), ("repeat_last_n", repeat_last_n),
                                   ("frequency_penalty", frequency_penalty),
                                   ("presence_penalty", presence_penalty)) if v is not None}
        kwargs = _with_sampler(knobs, kwargs)
        if kwargs.get("draft") is not None:   # a draft model's path is loaded here, as the target was
            from bitnet_lab.generate.speculative import make_drafter

            kwargs["draft"] = make_drafter(kwargs["draft"], self, load=lambda path: load(
                path, backend=self.backend, threads=self.threads))
        return generate(self, prompt, **kwargs)

    def generate_batch(self, prompts: Sequence[str | Sequence[int]], **kwargs: Any) -> list:
        """Generate for several prompts at once, one pass over the weights per step (see
        bitnet_lab.generate.batch.generate_batch): a list of `BatchResult` in prompt order. The
        sampler keywords are those of `generate` (``temp``, ``top_k``, ...) or ``sampler=``; each
        result equals `generate` on its prompt alone with the same sampler and seed."""
        from bitnet_lab.generate.batch import generate_batch

        knob_names = ("temp", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "frequency_penalty",
                      "presence_penalty")
        knobs = {k: kwargs.pop(k) for k in knob_names if kwargs.get(k) is not None}
        for k in knob_names:
            kwargs.pop(k, None)
        return generate_batch(self, prompts, **_with_sampler(knobs, kwargs))

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Model({c.arch}, {c.n_layers} layers, hidden {c.hidden}, vocab {c.vocab}, "
            f"{self.n_params / 1e6:.1f}M params, {self.size_bytes / 2**20:.1f} MiB, "
            f"{self.file_format} {self.source.name}, backend={self.backend}, "
            f"numerics={self.backend_options.get('numerics', 'bitnet')})"
        )


def _open_local(path: Path, tl_tiling: Any) -> tuple[ModelConfig, dict, Mapping[str, Any], str, Any, Path]:
    if path.is_dir():
        if (path / "config.json").exists():
            return _open_hf(path, tl_tiling)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
        elif ggufs:
            names = ", ".join(p.name for p in ggufs)
            raise FormatError(f"{path} holds several GGUF files ({names}); pass one of them")
        else:
            raise FormatError(f"{path} holds neither a config.json (Hugging Face) nor a .gguf file")
    if path.suffix == ".safetensors" or path.name.endswith(".safetensors.index.json"):
        return _open_hf(path.parent, tl_tiling)
    from bitnet_lab.formats.gguf import GGUFFile

    f = GGUFFile(path, tl_tiling=tl_tiling)
    try:
        if tl_tiling is not None and not any(ti.layout in ("tl1", "tl2") for ti in f.tensor_infos):
            raise ConfigError(f"tl_tiling (--tl-tiling) is for TL1/TL2 files; {path.name} has no TL1/TL2 tensor")
        tensors = f.tensors()
        config = ModelConfig.from_gguf(f.metadata, {n: t.shape for n, t in tensors.items()})  # counts vs tensors
    except BaseException:
        f.close()
        raise
    return config, tensors, f.metadata, "gguf", f.close, path


def _open_hf(directory: Path, tl_tiling: Any = None):
    if tl_tiling is not None:
        raise ConfigError(f"tl_tiling (--tl-tiling) is for TL1/TL2 GGUF files, not the Hugging Face checkpoint "
                          f"{directory}")
    from bitnet_lab.formats.hf import read_hf_checkpoint

    config, tensors, info = read_hf_checkpoint(directory)
    return config, tensors, info, "safetensors", None, directory


def check_threads(threads: Any, what: str = "threads") -> int | None:
    """``threads`` as given by a user: None (the default), or checked and clamped by
    `bitnet_lab.kernels.usable_threads`, with one warning when clamped."""
    if threads is None:
        return None
    from bitnet_lab.kernels import allowed_cpus, usable_threads

    n, clamped = usable_threads(threads, what)
    if clamped:
        import warnings

        warnings.warn(f"{what}={threads} is more than the {len(allowed_cpus())} CPUs this process may use; "
                      f"using {n}", stacklevel=3)
    return n


def load(
    source: str | os.PathLike,
    *,
    backend: str = "native",
    threads: int | None = None,
    tl_tiling: Any = None,
    revision: str | None = None,
    filename: str | None = None,
    mmap: bool = True,
    numerics: str | None = None,
    **backend_options: Any,
) -> Model:
    """Load a model from a GGUF file, a Hugging Face checkpoint directory, or a Hub repo id.

    Local paths never touch the network; ``owner/name`` strings that are not existing paths
    are resolved through huggingface_hub (cache, ``revision``, ``HF_HUB_OFFLINE``).
    ``numerics``: whose arithmetic the backend computes (docs/numerics.md#12-numerics-profiles):
    ``"bitnet"`` (default: the model's training numerics) or ``"llama.cpp"`` (what upstream llama.cpp
    computes for the same file); it fixes the defaults of ``rounding``, ``kv_dtype`` and
    ``lm_head_dtype``, and an explicit option that contradicts it is refused here, before anything
    is read. ``backend_options`` go to the backend (e.g. ``rounding=``, ``kv_dtype=``).
    ``tl_tiling`` (TL1/TL2 GGUF files only, the CLI's ``--tl-tiling``): ``"BM,BK,bm"`` or a
    `TLTiling` for every TL tensor, a preset name (``bitnet_lab.quant.tiling.preset_names()``), or
    ``{(M, K) or tensor name: tiling}``; without it the file's ``bitnet_lab.tl_tiling`` key or
    bitnet.cpp's preset of the model its shapes identify is used (`bitnet_lab.formats.gguf.GGUFFile`).
    ``mmap=False`` (llama.cpp's ``--no-mmap``): the weights are read into anonymous huge pages
    instead of being used in place from the file's memory map (``bitnet_lab.engine.residency``).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    threads = check_threads(threads)
    from bitnet_lab.quant.tiling import parse_tl_tiling

    tl_tiling = parse_tl_tiling(tl_tiling)  # a bad value is refused before any file is touched
    if numerics is not None:  # resolved now (a bad combination fails before the file is opened) and kept
        from bitnet_lab.backend import numerics_options

        backend_options = {**backend_options, **numerics_options(
            numerics, **{k: backend_options.get(k) for k in ("rounding", "kv_dtype", "lm_head_dtype")})}
    path = Path(os.fspath(source)).expanduser()
    if not path.exists():
        from bitnet_lab.formats import hub

        if not hub.is_repo_id(str(source)):
            raise FormatError(f"no such file or directory: {source}")
        path = hub.resolve(str(source), revision=revision, filename=filename)
    config, tensors, metadata, fmt, closer, resolved = _open_local(path, tl_tiling)
    if not mmap:
        from bitnet_lab.engine.residency import to_anonymous_memory

        skip: set[str] = set()
        # the engine re-orders these I2_S / TQ2_0 projections into memory of its own (never under
        # numerics="llama.cpp", whose per-block kernels read the row-major layouts)
        if backend == "native" and backend_options.get("numerics", "bitnet") != "llama.cpp":
            from bitnet_lab.engine.weights import x4_repacked_names

            skip = x4_repacked_names(config, tensors, backend_options.get("i2s_layout", "auto"))
        tensors = to_anonymous_memory(tensors, skip)
    return Model(
        config=config,
        tensors=tensors,
        metadata=metadata,
        source=resolved,
        file_format=fmt,
        backend=backend,
        threads=threads,
        mmap=bool(mmap),
        backend_options=dict(backend_options),
        _closer=closer,
    )


def _with_sampler(knobs: dict, kwargs: dict) -> dict:
    """``kwargs`` with ``sampler`` made from llama.cpp's sampler knobs (``temp``, ``top_k``, ...)
    when any is given; an error when ``sampler=`` is given too."""
    if knobs:
        if kwargs.get("sampler") is not None:
            raise ConfigError(f"give sampler= or the sampler keywords ({', '.join(knobs)}), not both")
        from bitnet_lab.generate.sampling import make_sampler

        kwargs = {**kwargs, "sampler": make_sampler(**knobs)}
    return kwargs
