"""The weights policy of every pretrained model of stage one (every family with weights).

    pretrained   the published checkpoint, from its library's cache: torch hub's, or the
                 Hugging Face hub's for timm and OpenCLIP (downloaded into it once)
    a path       a local state dict (.pth or .safetensors), checked against the model's shapes before any work;
                 identified by its content (sha256), never by its path
    random       seeded random weights: only when asked (or, for the embedded sample only,
                 when the download is impossible), announced loudly, and named in the
                 feature-set id so such features are never mistaken for real ones

Checkpoints are loaded with `weights_only=True`: a file that would run code when unpickled
is refused. `resolve` turns the option into a WeightsSpec, `build_model` turns a spec into a model
through the three hooks a family supplies (`Builders`), and `on_worker` checks a spec where a
Dask worker builds it: the only places that look at which of the three kinds a spec is.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline import console
from pipeline.errors import ConfigError
from pipeline.files import file_sha256

from .errors import WeightsError


@dataclass(frozen=True)
class WeightsSpec:
    kind: str  # the pretrained name (imagenet, vggish) | file | random
    identity: str  # recorded in the feature-set identity
    path: Path | None = None  # local file (cached download or user file)
    seed: int = 0

    @property
    def published(self) -> bool:
        """The library's published checkpoint (not a user's file, not random)."""
        return self.kind not in ("file", "random")

    @property
    def file(self) -> Path:
        """The local file of weights that are not `random`."""
        if self.path is None:
            raise ValueError(f"weights {self.identity!r} ({self.kind}) have no file")
        return self.path


@dataclass(frozen=True)
class Checkpoint:
    """What a model needs from this module: its option's name, its published checkpoint, and how
    to check that a state dict fits it (raising WeightsError with what does not)."""

    name: str  # e.g. "ImageNet"
    file_hint: str  # the file a user would pass, e.g. "resnet50.pth"
    pretrained: str  # the word that asks for the published weights, e.g. "imagenet"
    identity: str  # the published weights' identity, e.g. "torchvision:IMAGENET1K_V2"
    cache_path: Callable[[], Path]
    download: Callable[[], None]  # into cache_path(); may raise OSError / URLError / RuntimeError
    check: Callable[[dict, Path], None]  # state dict (on the meta device) fits the model, else WeightsError
    what: str  # e.g. "ImageNet features", for the random-weights banner
    flag: str = "--weights"  # the command-line option (a sound family's: --audio-weights)
    variable: str = "WEIGHTS"  # its Make variable

    @property
    def option(self) -> str:
        return f"{self.flag} ({self.variable}=)"


def resolve(
    ckpt: Checkpoint, weights: str, seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """Turn the option's value into a concrete, identifiable weights source, downloading if needed."""
    if weights == "random":
        warn_random(f"{ckpt.option} random was asked for", ckpt.what)
        return WeightsSpec("random", f"random:seed{seed}", None, seed)
    if weights != ckpt.pretrained:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"{ckpt.option}: no file at {path} (or say '{ckpt.pretrained}' or 'random')")
        # Checked now, not only when the model is built (on a background thread, once the
        # feature set is open and decoding has started): a file that does not fit is a bad
        # option, rejected before any work.
        ckpt.check(load_state_dict(path, ckpt.option, map_location="meta"), path)
        return WeightsSpec("file", file_identity(path), path)
    cached = ckpt.cache_path()
    if not cached.is_file():
        try:
            # torch hub writes `Downloading: "<url>"` to stdout, which holds only a command's results
            with socket_timeout(download_timeout), contextlib.redirect_stdout(sys.stderr):
                ckpt.download()
            # A hub cache's file is found only once it is there (its snapshot's name is the revision).
            cached = ckpt.cache_path()
        except (OSError, urllib.error.URLError, RuntimeError) as e:
            msg = (
                f"{ckpt.name} weights are not cached at {cached} and could not be downloaded "
                f"({type(e).__name__}: {e}). On an offline machine copy {cached.name} there, or pass "
                f"{ckpt.variable}=/path/to/{ckpt.file_hint}, or {ckpt.variable}=random (seeded random weights: "
                f"to try the pipeline, not for accuracy; the id says 'random')"
            )
            if not fallback_to_random:
                raise WeightsError(msg) from None
            warn_random(msg, ckpt.what)
            return WeightsSpec("random", f"random:seed{seed}", None, seed)
    return WeightsSpec(ckpt.pretrained, ckpt.identity, cached)


@dataclass(frozen=True)
class Builders:
    """How a family builds its model (on the CPU, in eval mode or not) from each kind of weights.

    random      () -> the model, freshly initialised (`build_model` seeds torch first)
    from_state  a state dict already checked against the model (Checkpoint.check) -> the model
    published   the cached published file -> the model, as its library loads it; None: the
                file is a state dict like a user's (read, checked and given to `from_state`)
    """

    random: Callable[[], Any]
    from_state: Callable[[dict], Any]
    published: Callable[[Path], Any] | None = None


def build_model(spec: WeightsSpec, ckpt: Checkpoint, builders: Builders) -> Any:
    """The model `spec` names, built by the family's hooks: seeded random, a user's state dict
    (checked against the model's shapes first) or the published checkpoint."""
    if spec.kind == "random":
        torch.manual_seed(spec.seed)  # the same seed builds the same model
        return builders.random()
    if spec.published and builders.published is not None:
        return builders.published(spec.file)
    state = load_state_dict(spec.file, ckpt.option)
    if any(v.is_meta for v in state.values()):
        raise WeightsError(f"{ckpt.option} {spec.file}: its tensors hold no data (saved from the meta device)")
    ckpt.check(state, spec.file)
    return builders.from_state(state)


def on_worker(spec: WeightsSpec, resolve_here: Callable[[], WeightsSpec | None], host: str, what: str) -> WeightsSpec:
    """The driver's weights as a Dask worker on `host` will build them: random as they are, a
    file at the same path with the same content, published ones from this machine's own cache
    (`resolve_here`, which downloads once). Checked against the identity the feature set
    records, so a worker with another file at the same path cannot slip other numbers in."""
    if spec.kind == "random":
        return spec
    if spec.published and not (spec.path and Path(spec.path).is_file()):
        local = resolve_here()
        if local is None or local.identity != spec.identity:
            raise WeightsError(
                f"worker {host}: {what} weights here are {local and local.identity}, the run uses {spec.identity}"
            )
        return local
    if not (spec.path and Path(spec.path).is_file()):
        raise WeightsError(
            f"--weights {spec.path}: not found on worker {host}; put the file where every worker sees it at the same path"
        )
    if spec.kind == "file" and file_identity(Path(spec.path)) != spec.identity:
        raise WeightsError(
            f"--weights {spec.path}: the file on worker {host} differs from the driver's ({spec.identity})"
        )
    return spec


class socket_timeout:
    """Within the block, sockets time out after `seconds` (restored after)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __enter__(self) -> None:
        self.old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(self.seconds)

    def __exit__(self, *exc) -> None:
        socket.setdefaulttimeout(self.old)


def file_identity(path: Path) -> str:
    """How a weights file is named in a feature-set id: its content, not its path."""
    return f"sha256:{file_sha256(path)[:16]}"


def warn_random(reason: str, what: str) -> None:
    bar = "!" * 78
    console.say(
        f"\n{bar}\n! {reason}\n! USING SEEDED RANDOM WEIGHTS. These features are NOT {what};\n"
        f"! the feature-set id says 'random' so they are never mistaken for real ones.\n{bar}\n"
    )


def load_state_dict(path: Path, option: str, map_location: str = "cpu") -> dict:
    """The state dict in a .pth or .safetensors file (common checkpoint wrappers unwrapped,
    "module." prefixes dropped); map_location "meta" reads shapes only, no tensor data."""
    try:
        obj: object = (
            read_safetensors(path, map_location)
            if path.suffix == ".safetensors"
            else torch.load(path, map_location=map_location, weights_only=True)
        )
    except Exception as e:  # a pickle with code, a zip that is not a checkpoint, ...
        raise WeightsError(f"{option} {path}: not a loadable PyTorch state dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{option} {path}: expected a state dict of tensors, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def read_safetensors(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    """A .safetensors file's tensors; on "meta", empty tensors of its shapes (the header only)."""
    from safetensors import safe_open  # only for .safetensors files

    with safe_open(str(path), framework="pt", device="cpu") as f:
        if map_location == "meta":
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
        return {k: f.get_tensor(k) for k in f.keys()}


def check_shapes(
    expected: dict[str, tuple], state: dict, path: Path, option: str, model: str, optional: tuple[str, ...] = ()
) -> None:
    """Every expected tensor present with its shape (those in `optional` may be absent), nothing else;
    else WeightsError saying what is missing, of the wrong shape, or unexpected."""
    missing = [k for k in expected if k not in state and k not in optional]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(s)}"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != tuple(s)
    ]
    unexpected = [k for k in state if k not in expected]
    if missing or wrong or unexpected:
        detail = "; ".join(
            filter(
                None,
                [
                    f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                    f"{len(wrong)} of the wrong shape (e.g. {wrong[:2]})" if wrong else "",
                    f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                ],
            )
        )
        raise WeightsError(f"{option} {path} does not fit {model}: {detail}")
