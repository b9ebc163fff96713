"""Hub resolution without the network: huggingface_hub calls are monkeypatched, offline mode
runs the real library against temporary caches."""

from __future__ import annotations

import os

import huggingface_hub as hf
import pytest

from bitnet_lab.errors import HubError
from bitnet_lab.formats import hub


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the Hub fails the test; tests that want a Hub answer patch these."""

    def boom(*a, **kw):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(hf.HfApi, "list_repo_files", boom)
    monkeypatch.setattr(hf, "hf_hub_download", boom)
    monkeypatch.setattr(hf, "snapshot_download", boom)
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)   # the probe: "online" unless a test says not
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _online(monkeypatch, files, calls):
    monkeypatch.setattr(hf.HfApi, "list_repo_files", lambda self, repo_id, revision=None, **kw: list(files))

    def fake_file(repo_id, filename, **kw):
        calls.append(("file", repo_id, filename, kw))
        return f"/cache/{repo_id}/{filename}"

    def fake_snapshot(repo_id, **kw):
        calls.append(("snapshot", repo_id, kw))
        return f"/cache/{repo_id}"

    monkeypatch.setattr(hf, "hf_hub_download", fake_file)
    monkeypatch.setattr(hf, "snapshot_download", fake_snapshot)


def test_is_repo_id(tmp_path, monkeypatch):
    assert hub.is_repo_id("microsoft/bitnet-b1.58-2B-4T-gguf")
    assert hub.is_repo_id("tiiuae/Falcon3-1B-Instruct-1.58bit")
    for s in ("model.gguf", "dir/model.gguf", "./a/b", "/abs/path", "~/x/y", "a/b/c", "../a/b", "just-a-name",
              "owner/name.safetensors"):
        assert not hub.is_repo_id(s), s
    (tmp_path / "owner" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not hub.is_repo_id("owner/name")  # an existing local path wins
    assert not hub.is_repo_id(tmp_path / "owner")


def test_local_path_never_touches_network(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert hub.resolve(f) == f
    assert hub.resolve(str(tmp_path)) == tmp_path


def test_gguf_repo_picks_i2_s(monkeypatch):
    calls = []
    _online(monkeypatch, ["README.md", "ggml-model-i2_s.gguf", "ggml-model-tl2.gguf", "data/x.bin"], calls)
    p = hub.resolve("microsoft/bitnet-b1.58-2B-4T-gguf", revision="main")
    assert p.name == "ggml-model-i2_s.gguf"
    assert calls[0][:3] == ("file", "microsoft/bitnet-b1.58-2B-4T-gguf", "ggml-model-i2_s.gguf")
    assert calls[0][3]["revision"] == "main"
    calls.clear()
    assert hub.resolve("o/n", filename="ggml-model-tl2.gguf").name == "ggml-model-tl2.gguf"
    with pytest.raises(HubError, match="no file 'nope.gguf'"):
        hub.resolve("o/n", filename="nope.gguf")


def test_gguf_choice_rules():
    assert hub.choose_gguf(["a.gguf"]) == "a.gguf"
    assert hub.choose_gguf(["x-I2_S.gguf", "x-f16.gguf"]) == "x-I2_S.gguf"
    assert hub.choose_gguf(["config.json"]) is None
    with pytest.raises(HubError, match="2 candidate GGUF files.*filename="):
        hub.choose_gguf(["a-f16.gguf", "a-q8_0.gguf"])


def test_safetensors_repo_downloads_snapshot(monkeypatch):
    calls = []
    _online(monkeypatch, ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                          "README.md", "generation_config.json"], calls)
    p = hub.resolve("microsoft/bitnet-b1.58-2B-4T")
    assert str(p) == "/cache/microsoft/bitnet-b1.58-2B-4T"
    kind, repo, kw = calls[0]
    assert kind == "snapshot" and "*.safetensors" in kw["allow_patterns"] and "config.json" in kw["allow_patterns"]
    assert "README.md" not in kw["allow_patterns"]


def test_repo_without_usable_files(monkeypatch):
    _online(monkeypatch, ["README.md", "pytorch_model.bin", "config.json"], [])
    with pytest.raises(HubError, match="neither a GGUF file nor a safetensors checkpoint"):
        hub.resolve("o/n")


def test_not_a_path_nor_repo():
    with pytest.raises(HubError, match="neither an existing local path nor a Hub repo id"):
        hub.resolve("no/such/file.gguf")


def test_offline_empty_cache_says_what_to_do(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 and nothing cached: the real huggingface_hub (cache only) misses and
    the error explains the three ways out."""
    monkeypatch.undo()  # the real library; offline mode keeps it off the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError) as e:
        hub.resolve("microsoft/bitnet-b1.58-2B-4T-gguf", cache_dir=tmp_path)
    msg = str(e.value)
    assert "HF_HUB_OFFLINE" in msg and "bitnet-lab download microsoft/bitnet-b1.58-2B-4T-gguf" in msg
    assert "local path" in msg
    with pytest.raises(HubError, match="HF_HUB_OFFLINE is set"):
        hub.download("o/n", cache_dir=tmp_path)


def _fake_cache(root, repo, files):
    base = root / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")
    for f in files:
        (snap / f).write_bytes(b"x")
    return snap


def test_offline_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.undo()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = _fake_cache(tmp_path, "o/gguf", ["ggml-model-i2_s.gguf", "README.md"])
    assert hub.resolve("o/gguf", cache_dir=tmp_path) == snap / "ggml-model-i2_s.gguf"
    snap2 = _fake_cache(tmp_path, "o/st", ["config.json", "model.safetensors", "tokenizer.json"])
    assert hub.resolve("o/st", cache_dir=tmp_path) == snap2
    _fake_cache(tmp_path, "o/partial", ["tokenizer.json"])
    with pytest.raises(HubError, match="cached snapshot of 'o/partial'.*HF_HUB_OFFLINE"):
        hub.resolve("o/partial", cache_dir=tmp_path)


def test_connection_failure_falls_back_to_cache(tmp_path, monkeypatch):
    """The connection breaks after the probe (a transport error while listing): the cache is
    used, quietly, as huggingface_hub does; an empty cache ends in one HubError with guidance."""
    import warnings

    from huggingface_hub import errors as hf_errors

    def unreachable(self, repo_id, **kw):
        raise hf_errors.HTTPError("[Errno -2] Name or service not known")

    monkeypatch.undo()  # the real snapshot_download (cache only in the fallback)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "hub_reachable", lambda: True)
    monkeypatch.setattr(hf.HfApi, "list_repo_files", unreachable)
    snap = _fake_cache(tmp_path, "o/gguf", ["ggml-model-i2_s.gguf"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hub.resolve("o/gguf", cache_dir=tmp_path) == snap / "ggml-model-i2_s.gguf"
        with pytest.raises(HubError, match="bitnet-lab download o/other") as e:
            hub.resolve("o/other", cache_dir=tmp_path)
    assert "no such local file or folder" in str(e.value) and "no connection to the Hub" in str(e.value)


def test_no_network_is_detected_once_without_retries(tmp_path, monkeypatch):
    """The probe fails (no network): the Hub is never listed (no retries), the cache answers,
    and a miss says both things in one message: no such local path, not in the cache."""
    calls = []

    def probe_session():
        calls.append("probe")

        class S:
            def head(self, url, timeout):
                raise OSError("[Errno -2] Name or service not known")

        return S()

    monkeypatch.undo()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.utils as hf_utils

    monkeypatch.setattr(hf_utils, "get_session", probe_session)
    monkeypatch.setattr(hf.HfApi, "list_repo_files", lambda *a, **k: pytest.fail("listed the Hub"))
    hub.hub_reachable.cache_clear()
    try:
        snap = _fake_cache(tmp_path, "o/gguf", ["ggml-model-i2_s.gguf"])
        assert hub.resolve("o/gguf", cache_dir=tmp_path) == snap / "ggml-model-i2_s.gguf"
        with pytest.raises(HubError) as e:
            hub.resolve("models/bitnet", cache_dir=tmp_path)
        with pytest.raises(HubError, match="no connection to the Hub"):
            hub.download("o/x", cache_dir=tmp_path)
    finally:
        hub.hub_reachable.cache_clear()
    msg = str(e.value)
    assert msg.startswith("'models/bitnet': no such local file or folder, and not in the Hugging Face cache")
    assert "no connection to the Hub" in msg and msg.count("bitnet-lab download") == 1
    assert calls == ["probe"]                                   # once per process


def test_offline_flag_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.offline_mode()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
