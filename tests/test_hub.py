"""hf:// checkpoints: resolved through huggingface_hub's cache (offline here: no machine reaches the Hub),
loaded with the safetensors loader, run as a grid cell; and every failure is one clear line."""

import http.server
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

from harness.run.grid import GridError, load_grid  # noqa: E402
from model import checkpoint, hub  # noqa: E402
from model.config import config_for  # noqa: E402
from model.testing import random_hf_model  # noqa: E402
from tests.helpers.hub_cache import add_to_cache  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NANO_TOKENIZER = REPO / "model" / "assets" / "nano_tokenizer.model"
REPO_ID = "google/paligemma2-nano-s-pt-32"  # what hf://google/paligemma2-{size}-pt-{resolution} names


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """An HF cache holding a nano-s-32 transformers checkpoint and its tokenizer under REPO_ID."""
    source = tmp_path_factory.mktemp("src")
    random_hf_model(config_for("nano-s", 32)).save_pretrained(source)
    shutil.copy(NANO_TOKENIZER, source / "tokenizer.model")
    (source / "README.md").write_text("not fetched: allow_patterns keep weights, JSON and tokenizer only\n")
    cache = tmp_path_factory.mktemp("hf_cache")
    add_to_cache(cache, REPO_ID, source)
    return cache, source


@pytest.fixture
def offline(cache, monkeypatch):
    """huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import; set its constants as the env would."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache[0]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_the_cache_layout_is_what_huggingface_hub_reads(cache):
    info = huggingface_hub.scan_cache_dir(cache[0])
    assert not info.warnings, info.warnings
    (repo,) = info.repos
    assert repo.repo_id == REPO_ID and {r.refs for r in repo.revisions} == {frozenset({"main"})}
    names = {f.file_name for r in repo.revisions for f in r.files}
    assert {"config.json", "model.safetensors", "tokenizer.model"} <= names


def test_resolve_offline_loads_the_same_tensors(offline):
    directory = hub.resolve(f"hf://{REPO_ID}")
    assert Path(directory).parent.parent == Path(offline[0]) / "models--google--paligemma2-nano-s-pt-32"
    config, params = checkpoint.load(directory)
    _, expected = checkpoint.load(str(offline[1]))
    assert config.name == "nano-s-32"
    for key, value in checkpoint.flatten(expected).items():
        np.testing.assert_array_equal(checkpoint.flatten(params)[key], value)
    assert hub.tokenizer_file(f"hf://{REPO_ID}") == os.path.join(directory, "tokenizer.model")
    assert hub.resolve(f"hf://{REPO_ID}@main") == directory
    assert hub.resolve(f"hf://{REPO_ID}", local_only=True) == directory


def test_local_only_never_downloads(cache, monkeypatch):
    """As a fingerprint at planning time uses it: the cache or a clear error, even with the Hub reachable."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache[0]))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    assert hub.resolve(f"hf://{REPO_ID}", local_only=True).startswith(str(cache[0]))
    with pytest.raises(hub.HubError, match=r"^hf://google/other: not in the Hugging Face cache"):
        hub.resolve("hf://google/other", local_only=True)


def test_released_repo_ids():
    assert hub.released_repo_id("3b", 224) == "google/paligemma2-3b-pt-224"
    assert hub.released_repo_id("28b", 896) == "google/paligemma2-28b-pt-896"
    with pytest.raises(KeyError, match="no released PaliGemma 2 checkpoint of size 'nano-s'"):
        hub.released_repo_id("nano-s", 32)


def test_missing_from_the_offline_cache_is_one_line(offline):
    with pytest.raises(hub.HubError) as e:
        hub.resolve("hf://google/paligemma2-3b-pt-224")
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("hf://google/paligemma2-3b-pt-224: not in the Hugging Face cache")


@pytest.mark.parametrize("bad", ["hf://", "hf://just-a-name", "hf://a/b/c", "hf://org/name@", "hf://org/../x"])
def test_malformed_ids(bad):
    with pytest.raises(hub.HubError, match="is not a Hub id; expected hf://org/name"):
        hub.resolve(bad)


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers every request the way the Hub answers for a gated or a missing repository."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        gated = "gated" in self.path
        self.send_response(401 if gated else 404)
        self.send_header("X-Error-Code", "GatedRepo" if gated else "RepoNotFound")
        self.send_header("X-Error-Message", "Access restricted" if gated else "Repository not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield
    server.shutdown()


def test_gated_repository_without_token_is_one_line(fake_hub):
    with pytest.raises(hub.HubError, match=r"^hf://google/gated-model: the repository is gated; accept its "
                                           r"licence on huggingface.co and log in") as e:
        hub.resolve("hf://google/gated-model")
    assert "\n" not in str(e.value)


def test_unknown_repository_is_one_line(fake_hub):
    with pytest.raises(hub.HubError, match=r"^hf://google/no-such-model: no such repository on the Hub"):
        hub.resolve("hf://google/no-such-model")


def test_no_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub.HubError, match=r"^hf://google/x: not in the Hugging Face cache and the Hub cannot "
                                           r"be reached"):
        hub.resolve("hf://google/x")


def _grid(path: Path, checkpoints: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        name: hub
        demo: {{num_train: 8, num_eval: 4, seed: 3}}
        tasks: [vqav2]
        sizes: [nano-s]
        resolutions: [32]
        lrs: [1.0e-3]
        data_root: data
        checkpoints: {checkpoints}
        overrides:
          all: {{steps: 2, batch_size: 4, text_len: 24, max_decode_len: 4, eval_batch_size: 4}}
    """))
    return path


def test_grid_accepts_hub_ids_without_a_file_check_and_validates_their_form(tmp_path):
    grid = load_grid(_grid(tmp_path / "g.yaml", "hf://google/paligemma2-{size}-pt-{resolution}"))
    assert grid.checkpoint("nano-s", 32) == "hf://google/paligemma2-nano-s-pt-32"
    with pytest.raises(GridError, match=r"g2.yaml:9: checkpoints: 'hf://paligemma2-nano-s-pt-32' is not a "
                                        r"Hub id; expected hf://org/name"):
        load_grid(_grid(tmp_path / "g2.yaml", "hf://paligemma2-{size}-pt-{resolution}"))


def _cli(work: Path, cache: Path, *args):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache),
               PALIGEMMA_TRANSFER_CACHE=str(work / "cache"),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_grid_cell_runs_from_an_hf_checkpoint_offline(cache, tmp_path):
    """Weights and tokenizer both come from the cached repository; HF_HUB_OFFLINE=1, no network."""
    _grid(tmp_path / "grid.yaml", "hf://google/paligemma2-{size}-pt-{resolution}")
    proc = _cli(tmp_path, cache[0], "run", "grid.yaml", "--workdir", "out", "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "out" / "records").glob("*.json")]
    assert record["config"]["checkpoint"] == "hf://google/paligemma2-nano-s-pt-32"
    assert record["steps"] == 2 and record["extra"]["num_eval_examples"] == 4
    # The cell's experiment log (on by default): TensorBoard events with every step and the eval metrics.
    from tests.test_experiment_log import TRAIN_TAGS, read_tensorboard

    scalars = read_tensorboard(tmp_path / "out" / "cells" / record["cell_id"] / "tensorboard")
    assert all([s for s, _ in scalars[tag]] == [1, 2] for tag in TRAIN_TAGS)
    assert scalars[f"eval/{record['headline']}"] == [(2, pytest.approx(record["metrics"][record["headline"]]))]


def test_a_grid_cell_whose_repository_is_not_cached_fails_in_one_line(cache, tmp_path):
    _grid(tmp_path / "grid.yaml", "hf://google/paligemma2-{size}-pt-{resolution}-missing")
    proc = _cli(tmp_path, cache[0], "run", "grid.yaml", "--workdir", "out", "--quiet")
    assert proc.returncode != 0
    assert "hf://google/paligemma2-nano-s-pt-32-missing: not in the Hugging Face cache" in proc.stderr
