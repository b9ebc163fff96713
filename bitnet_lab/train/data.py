"""Corpus and tokenizer: documents from a gathered corpus, a byte-level BPE, token files."""


from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from bitnet_lab.errors import ConfigError
from bitnet_lab.train.config import EOT, PRE_TOKENIZER, TOKENIZER_DIR, say


# =============================================================================================
# Corpus and tokenizer
# =============================================================================================


def read_documents(corpus: str | os.PathLike, split: str = "train") -> Iterator[str]:
    """The texts of ``<corpus>/<split>.jsonl`` (scripts/gather_corpus.py's format), in order."""
    path = Path(corpus).expanduser() / f"{split}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: gather the corpus first "
                          f"(python scripts/gather_corpus.py --out {Path(corpus)})")
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            try:
                doc = json.loads(line)
                text = doc["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}:{k}: not a corpus line ({type(e).__name__}: {e})") from None
            if not isinstance(text, str):
                raise ConfigError(f"{path}:{k}: 'text' is {type(text).__name__}, not a string")
            yield text


def train_tokenizer(corpus: str | os.PathLike | Iterable[str], vocab_size: int = 4096, *,
                    min_frequency: int = 2) -> Any:
    """Train a byte-level BPE (``tokenizers.Tokenizer``) of at most ``vocab_size`` tokens.

    ``corpus``: a corpus folder (its ``train.jsonl``) or an iterable of texts. Pre-tokenisation is
    the Llama-3 split regex followed by GPT-2's byte → character map, exactly what bitnet_lab's
    ``Tokenizer`` runs for ``tokenizer.ggml.pre = llama-bpe``; all 256 bytes are in the
    vocabulary (no unknown token); ``<|endoftext|>`` is the one special token (id 0).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from bitnet_lab.formats.vocab import LLAMA3_REGEX

    if vocab_size < 256 + 1 + 1:
        raise ConfigError(f"vocab_size {vocab_size} is too small for 256 bytes, {EOT} and one merge")
    texts = read_documents(corpus) if isinstance(corpus, (str, os.PathLike)) else iter(corpus)
    tok = Tokenizer(models.BPE(ignore_merges=True))  # llama-bpe runs with ignore_merges
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Any, folder: str | os.PathLike, chat_template: str | None = None) -> Path:
    """Write ``tokenizer.json`` and a ``tokenizer_config.json`` naming the special token (and the
    chat template, if any: the exported GGUF's ``tokenizer.chat_template``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"bos_token": EOT, "eos_token": EOT, "eot_token": EOT, "add_bos_token": True,
           "add_eos_token": False, "model_max_length": None}
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return folder


def tokenizer_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The GGUF ``tokenizer.*`` keys of a saved tokenizer (``formats.vocab``'s converter)."""
    from bitnet_lab.formats.vocab import vocab_metadata_from_hf

    return vocab_metadata_from_hf(folder, pre=PRE_TOKENIZER)


def encode_documents(tokenizer: Any, docs: Iterable[str], path: str | os.PathLike) -> int:
    """Encode documents with a bitnet_lab ``Tokenizer`` into a uint16 file; returns the count.

    Layout: ``EOT doc₁ EOT doc₂ … EOT docₙ EOT`` — every document starts right after an
    ``<|endoftext|>``, as a prompt starts after the BOS the tokenizer adds.
    """
    eot = tokenizer.eot_id
    if eot is None:
        raise ConfigError(f"the tokenizer has no {EOT} token")
    if tokenizer.vocab_size > 65536:
        raise ConfigError(f"vocabulary of {tokenizer.vocab_size} tokens does not fit uint16")
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    with open(tmp, "wb") as f:
        f.write(np.array([eot], np.uint16).tobytes())
        n += 1
        for text in docs:
            ids = tokenizer.encode(text, add_bos=False, add_eos=False)
            ids.append(eot)
            f.write(np.asarray(ids, dtype=np.uint16).tobytes())
            n += len(ids)
    os.replace(tmp, path)
    return n


class TokenData:
    """Training windows over a memory-mapped uint16 token file.

    ``batch(step)`` draws ``batch`` windows of ``context + 1`` tokens at uniformly random starts
    from a generator seeded by ``(seed, step)``: the batch of a step never depends on what ran
    before it, which is what makes resuming exact.
    """

    def __init__(self, path: str | os.PathLike, context: int) -> None:
        self.path = Path(path)
        self.ids = np.memmap(self.path, dtype=np.uint16, mode="r")
        self.context = int(context)
        if len(self.ids) < self.context + 2:
            raise ConfigError(f"{self.path}: {len(self.ids)} tokens, fewer than one window of "
                              f"{self.context + 1} (+1) tokens; use a larger corpus or a shorter context")

    def __len__(self) -> int:
        return len(self.ids)

    def _windows(self, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = self.ids[starts[:, None] + np.arange(self.context + 1)].astype(np.int32)  # (B, T+1)
        return w[:, :-1], w[:, 1:]

    def batch(self, step: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs, targets)`` int32 (batch, context) for training step ``step``."""
        rng = np.random.default_rng([int(seed), int(step)])
        starts = rng.integers(0, len(self.ids) - self.context - 1, size=batch, endpoint=True)
        return self._windows(starts)

    def eval_windows(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` windows at evenly spaced starts (the same ones at every evaluation)."""
        last = len(self.ids) - self.context - 1
        return self._windows(np.linspace(0, last, num=n).astype(np.int64))


def _clear_prepared_data(run_dir: Path, identity: dict[str, Any]) -> None:
    """Remove the run folder's tokenizer, token files and data.json unless data.json says they
    were made from ``identity``'s data (then they are reused: same data, same files)."""
    import shutil

    data_json = run_dir / "data.json"
    try:
        before = json.loads(data_json.read_text()) if data_json.is_file() else None
    except (OSError, ValueError):
        before = None
    if before is not None and all(before.get(k) == identity[k] for k in ("vocab", "corpus_sha256", "valid_sha256")):
        return
    shutil.rmtree(run_dir / TOKENIZER_DIR, ignore_errors=True)
    for name in ("train.bin", "valid.bin", "data.json"):
        (run_dir / name).unlink(missing_ok=True)


def prepare_data(corpus: str | os.PathLike, run_dir: str | os.PathLike, vocab: int, *,
                 progress: bool = True, tokenizer: Any = None, chat_template: str | None = None,
                 restart: bool = False) -> dict[str, Any]:
    """Train (or reuse) the run's tokenizer and encode the corpus (or reuse the encoded files).

    ``tokenizer`` (a ``tokenizers.Tokenizer``, e.g. a base model's for ``train --init-from``): saved
    as the run's tokenizer instead of training one; ``chat_template``: stored with it. Both only
    when the run folder has no tokenizer yet.

    ``restart`` (``train --restart``): a run folder prepared from other data, or holding a
    tokenizer or token files without the data.json saying what they were made from, is cleared
    of them and prepared again instead of refused. Nothing is written before the corpus is found,
    so a try without one leaves the folder as it was.

    Returns ``{"tokenizer_md", "tokenizer", "n_train", "n_valid", "corpus_manifest"}``.
    """
    from bitnet_lab.tokenizer import Tokenizer

    run_dir = Path(run_dir)
    corpus = Path(corpus).expanduser()
    tok_dir = run_dir / TOKENIZER_DIR
    manifest_path = corpus / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    # What the tokenizer and the token files were made from: reusing them for another corpus or
    # vocabulary size would silently train on the wrong data.
    identity = {"vocab": int(vocab), "corpus": str(corpus),
                "corpus_sha256": manifest.get("sha256", {}).get("train.jsonl"),
                "valid_sha256": manifest.get("sha256", {}).get("valid.jsonl")}
    for split in ("train", "valid"):   # before anything is written into the run folder
        if not (corpus / f"{split}.jsonl").is_file():
            raise ConfigError(f"{corpus / f'{split}.jsonl'} does not exist: gather the corpus first "
                              f"(python scripts/gather_corpus.py --out {corpus})")
    data_json = run_dir / "data.json"
    if restart:
        _clear_prepared_data(run_dir, identity)
    if data_json.is_file():
        before = json.loads(data_json.read_text())
        diff = [f"{k}: {before.get(k)!r} then, {identity[k]!r} now" for k in ("vocab", "corpus_sha256", "valid_sha256")
                if before.get(k) != identity[k]]
        if diff:
            raise ConfigError(f"{run_dir} was prepared from other data ({'; '.join(diff)}); use a new run folder")
    elif (tok_dir / "tokenizer.json").exists() or (run_dir / "train.bin").exists():
        raise ConfigError(f"{run_dir} holds a tokenizer or token files but no data.json saying what they were "
                          "made from; use a new run folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    data_json.write_text(json.dumps(identity, indent=2) + "\n")
    if not (tok_dir / "tokenizer.json").is_file() and tokenizer is not None:
        save_tokenizer(tokenizer, tok_dir, chat_template)
    elif not (tok_dir / "tokenizer.json").is_file():
        say(f"training a {vocab}-token byte-level BPE on {corpus / 'train.jsonl'} ...", progress)
        t0 = time.perf_counter()
        save_tokenizer(train_tokenizer(corpus, vocab), tok_dir, chat_template)
        say(f"tokenizer trained in {time.perf_counter() - t0:.1f} s", progress)
    md = tokenizer_metadata(tok_dir)
    tok = Tokenizer.from_metadata(md, source=str(tok_dir))
    counts = {}
    for split in ("train", "valid"):
        path = run_dir / f"{split}.bin"
        if not path.is_file():
            t0 = time.perf_counter()
            counts[split] = encode_documents(tok, read_documents(corpus, split), path)
            say(f"{split}: {counts[split]:,} tokens in {time.perf_counter() - t0:.1f} s", progress)
        else:
            counts[split] = int(path.stat().st_size // 2)
    return {"tokenizer_md": md, "tokenizer": tok, "n_train": counts["train"], "n_valid": counts["valid"],
            "corpus_manifest": manifest}
