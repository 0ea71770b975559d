"""Published weights in the Hugging Face hub's cache or torch hub's: where a file is, and how it gets there.

timm and OpenCLIP publish most weights on the Hugging Face hub (a repository and a file
name) and some at a plain URL (torch hub's cache). The path a missing file is reported at
is the cache folder it would be downloaded into: a hub snapshot's name is its revision,
unknown until it is there.
"""

from __future__ import annotations

from pathlib import Path

import torch


def hf_cached(repo: str, filenames: tuple[str, ...]) -> Path:
    """The first of `filenames` cached for `repo`, else the repository's cache folder."""
    from huggingface_hub import constants, try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return Path(found)
    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def hf_download(repo: str, filenames: tuple[str, ...]) -> None:
    """The first of `filenames` that the repository has, into the hub's cache; OSError if none can be had."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    errors = []
    for name in filenames:
        try:
            hf_hub_download(repo, name)
            return
        except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, ValueError) as e:
            errors.append(f"{name}: {type(e).__name__}")
    raise OSError(f"{repo} from the Hugging Face hub ({'; '.join(errors)})")


def url_cached(url: str) -> Path:
    """Where torch hub caches the file at `url` (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def url_download(url: str) -> None:
    dst = url_cached(url)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dst), progress=True)
