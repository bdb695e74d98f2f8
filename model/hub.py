"""Checkpoints named by Hugging Face Hub id: `hf://org/name[@revision]` -> a local snapshot directory.

The download, the cache layout and offline mode are huggingface_hub's (`snapshot_download`): files land in
its cache (HF_HOME / HF_HUB_CACHE), `HF_HUB_OFFLINE=1` resolves from that cache with no network, and a
token comes from HF_TOKEN or `hf auth login`. Only what the loader reads is fetched: the safetensors
shards, the JSON files (config.json, the shard index) and the SentencePiece `tokenizer.model`. The
directory returned is an ordinary Hugging Face checkpoint directory for model/checkpoint.py's `load_hf`.

Every failure huggingface_hub reports (no such repository, a gated one without a token, no network and
nothing cached, a revision that does not exist) becomes one HubError line naming the id and what to do.
"""

from __future__ import annotations

import os
import re

PREFIX = "hf://"
ALLOW_PATTERNS = ("*.safetensors", "*.json", "tokenizer.model")
# The released PaliGemma 2 pretrained checkpoints (docs/paligemma2-facts.md §1.5 "Checkpoint layout"): sizes x
# resolutions; transformers' format of each is the Hub repository google/paligemma2-{size}-pt-{resolution}.
RELEASED_SIZES = ("3b", "10b", "28b")
RELEASED_RESOLUTIONS = (224, 448, 896)
_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_REVISION = re.compile(r"[A-Za-z0-9_.\-/]+")


class HubError(RuntimeError):
    """An hf:// checkpoint that cannot be resolved; the message is one line."""


def is_hub_id(path: str) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


def released_repo_id(size: str, resolution: int) -> str:
    """The Hub repository of a released PaliGemma 2 pretrained checkpoint, e.g. google/paligemma2-3b-pt-224."""
    if size not in RELEASED_SIZES or resolution not in RELEASED_RESOLUTIONS:
        raise KeyError(f"no released PaliGemma 2 checkpoint of size {size!r} at {resolution}px; released: "
                       f"sizes {list(RELEASED_SIZES)} x resolutions {list(RELEASED_RESOLUTIONS)}")
    return f"google/paligemma2-{size}-pt-{resolution}"


def parse(hub_id: str) -> tuple[str, str | None]:
    """'hf://org/name[@revision]' -> (repo_id, revision or None); ValueError saying the expected form."""
    if not is_hub_id(hub_id):
        raise ValueError(f"{hub_id!r} is not a Hub id; expected hf://org/name or hf://org/name@revision")
    repo_id, _, revision = hub_id[len(PREFIX):].partition("@")
    if not _REPO.fullmatch(repo_id) or ".." in repo_id or (revision and not _REVISION.fullmatch(revision)) \
            or hub_id.endswith("@"):
        raise ValueError(f"{hub_id!r} is not a Hub id; expected hf://org/name or hf://org/name@revision "
                         "(letters, digits, '-', '_', '.')")
    return repo_id, revision or None


def _message(hub_id: str, error: Exception) -> str:
    from huggingface_hub import errors

    if isinstance(error, errors.GatedRepoError):
        return (f"{hub_id}: the repository is gated; accept its licence on huggingface.co and log in "
                "(`hf auth login` or HF_TOKEN) to download it")
    if isinstance(error, errors.RepositoryNotFoundError):
        return (f"{hub_id}: no such repository on the Hub (or it is private and no valid token was "
                "given: `hf auth login` or HF_TOKEN)")
    if isinstance(error, errors.RevisionNotFoundError):
        return f"{hub_id}: the repository has no such revision"
    if isinstance(error, errors.LocalEntryNotFoundError):
        return (f"{hub_id}: not in the Hugging Face cache and the Hub cannot be reached (offline, or "
                f"HF_HUB_OFFLINE=1); download it once where there is network (e.g. `hf download "
                f"{parse(hub_id)[0]}`) into the cache HF_HUB_CACHE / HF_HOME points to")
    first = " ".join(str(error).split("\n")[0].split())
    return f"{hub_id}: cannot download from the Hub ({error.__class__.__name__}: {first})"


def resolve(hub_id: str, *, local_only: bool = False) -> str:
    """The local snapshot directory of `hf://org/name[@revision]`, downloaded into the Hub cache if
    missing (never with `local_only`, e.g. to fingerprint a checkpoint while planning). Raises HubError
    (one line) when it cannot be had or lacks a loadable checkpoint."""
    try:
        repo_id, revision = parse(hub_id)
    except ValueError as e:
        raise HubError(str(e)) from None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        directory = snapshot_download(repo_id, revision=revision, allow_patterns=list(ALLOW_PATTERNS),
                                      local_files_only=local_only)
    except (HfHubHTTPError, LocalEntryNotFoundError, HFValidationError, OSError) as e:
        raise HubError(_message(hub_id, e)) from None
    names = set(os.listdir(directory))
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise HubError(f"{hub_id}: the snapshot at {directory} has no config.json and *.safetensors; "
                       "expected a transformers PaliGemma checkpoint")
    return directory


def tokenizer_file(hub_id: str) -> str:
    """The SentencePiece tokenizer.model of the repository (the same snapshot as the weights)."""
    path = os.path.join(resolve(hub_id), "tokenizer.model")
    if not os.path.isfile(path):
        raise HubError(f"{hub_id}: the repository has no tokenizer.model; set overrides.tokenizer in the grid")
    return path
