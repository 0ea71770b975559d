"""ResNet-50 backbone: weights resolution, and uint8 frames -> 2048-d pooled features.

The device does the normalisation: frames travel as uint8 (4x fewer bytes than fp32),
the (B, H, W, 3) batch is permuted to NCHW *without copying*, which is exactly the
channels_last memory layout the convolutions want, and only then converted to the
compute dtype. On CUDA the model itself is cast to fp16/bf16 (`.half()` beat autocast
on the H100: 13,900 vs 12,400-12,900 images/s on an H100).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import socket
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from pipeline import console
from pipeline.config import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD
from pipeline.devices import DTYPES, inference_precision, resolve_device
from pipeline.errors import ConfigError, WeightsError
from pipeline.files import file_sha256

IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
# torch.compile's mode on CUDA: one compile searches kernels for this GPU (minutes).
COMPILE_MODE = "max-autotune-no-cudagraphs"


@dataclass(frozen=True)
class WeightsSpec:
    kind: str  # imagenet | file | random
    identity: str  # recorded in the feature-set identity
    path: Path | None = None  # local file (cached download or user file)
    seed: int = 0


def imagenet_cache_path() -> Path:
    """Where torchvision's weights API caches the ImageNet checkpoint (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def resolve_weights(
    weights: str, seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """Turn WEIGHTS= into a concrete, identifiable weights source, downloading if needed.

    imagenet -> torchvision's IMAGENET1K_V2, downloaded once into the torch hub cache;
    a path -> that state dict (identity: its sha256); random -> seeded init.
    With `fallback_to_random` (the embedded sample only), an unreachable download
    falls back to random weights, loudly; anywhere else it is an error.
    """
    if weights == "random":
        return WeightsSpec("random", f"random:seed{seed}", None, seed)
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(f"--weights (WEIGHTS=): no file at {path}")
        # Checked here, not only when the model is built (on a background thread, once the
        # feature set is open and decoding has started): a file that is not ResNet-50 is a
        # bad option, rejected before any work.
        with torch.device("meta"):  # shapes only: no memory, no init cost
            skeleton = torchvision.models.resnet50(weights=None)
        check_fits_resnet50(skeleton, load_state_dict(path, map_location="meta"), path)
        return WeightsSpec("file", file_identity(path), path)
    cached = imagenet_cache_path()
    if not cached.is_file():
        try:
            download_imagenet(download_timeout)
        except (OSError, urllib.error.URLError, RuntimeError) as e:
            msg = (
                f"ImageNet weights are not cached at {cached} and could not be downloaded ({type(e).__name__}: {e}). "
                f"On an offline machine copy {Path(IMAGENET_WEIGHTS.url).name} there, or pass WEIGHTS=/path/to/resnet50.pth"
            )
            if not fallback_to_random:
                raise WeightsError(msg) from None
            warn_random(msg)
            return WeightsSpec("random", f"random:seed{seed}", None, seed)
    return WeightsSpec("imagenet", f"torchvision:{IMAGENET_WEIGHTS.name}", cached)


def file_identity(path: Path) -> str:
    """How a weights file is named in a feature-set id: its content, not its path."""
    return f"sha256:{file_sha256(path)[:16]}"


def download_imagenet(timeout: float) -> None:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # an offline machine should fail in seconds, not hang
    try:
        IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True)
    finally:
        socket.setdefaulttimeout(old)


def warn_random(reason: str) -> None:
    bar = "!" * 78
    console.say(
        f"\n{bar}\n! {reason}\n! USING SEEDED RANDOM WEIGHTS. These features are NOT ImageNet features;\n"
        f"! the feature-set id says 'random' so they are never mistaken for real ones.\n{bar}\n"
    )


def build_resnet50(spec: WeightsSpec) -> torch.nn.Module:
    """ResNet-50 trunk with fc replaced by Identity: (B, 3, H, W) -> (B, 2048)."""
    if spec.kind == "random":
        torch.manual_seed(spec.seed)
        model = torchvision.models.resnet50(weights=None)
    else:
        model = torchvision.models.resnet50(weights=None)
        state = load_state_dict(spec.path)
        check_fits_resnet50(model, state, spec.path)
        model.load_state_dict(state, strict=False)
    model.fc = torch.nn.Identity()
    return model.eval()


def load_state_dict(path: Path, map_location: str = "cpu") -> dict:
    """The state dict in a .pth (unwrapping common checkpoint wrappers); map_location "meta"
    reads shapes only, no tensor data."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a pickle with code, a zip that is not a checkpoint, ...
        raise WeightsError(f"--weights {path}: not a loadable PyTorch state dict ({type(e).__name__}: {e})") from None
    for key in ("state_dict", "model", "model_state_dict"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"--weights {path}: expected a state dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_fits_resnet50(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Every trunk tensor must be present with the right shape; fc may differ or be absent."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(s)}"
        for k, s in expected.items()
        if k in state and tuple(state[k].shape) != tuple(s)
    ]
    unexpected = [k for k in state if k not in expected and not k.startswith("fc.")]
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
        raise WeightsError(f"--weights {path} does not fit ResNet-50: {detail}")


@functools.lru_cache(maxsize=None)
def warn_cpu_once(precision: str) -> None:
    console.say(f"note: no CUDA device: ResNet-50 runs on the CPU ({precision}), expect a few images/s")


class FeatureExtractor:
    """uint8 frames -> pooled ResNet-50 features on one device.

    `extract(frames)`: frames (B, S, S, 3) uint8 CPU tensor -> (B, 2048) float16 numpy.
    `embed(x)`: x (B, S, S, 3) uint8 already on the device -> (B, 2048) on the device, in
    the compute dtype, without waiting for the GPU (stage one's batcher overlaps it).
    With `compile`, every batch must have the same size (stages/batching.py pads the last
    one): a new shape would compile again, and on an H100 one compile took 277 s.

    Every piece of work this extractor does (the build, the warm-up, stage one's batches
    through `submit`, `extract`) runs on one long-lived thread of its own, `runner`.
    cuDNN caches its kernel search (cudnn.benchmark) per thread, so the search paid by
    the warm-up is the one every later batch uses, across shards, Dask tasks and runs in
    the same process; a search on another thread would be paid again, inside the timings.

    background: return at once while the runner builds the model (weights, copy to the
    device, compile), so stage one's decoders start meanwhile; embed/extract wait for it
    (and re-raise its error). warm_up (batch, size), on CUDA: also run one batch of that
    shape on the runner, so cuDNN's search (or the compile) is paid before the first frames.
    """

    def __init__(
        self,
        spec: WeightsSpec,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        background: bool = False,
        warm_up: tuple[int, int] | None = None,
    ):
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": the caller's current GPU, by number,
            self.device = torch.device(
                "cuda", torch.cuda.current_device()
            )  # so that the runner thread binds the same one
        self.precision = inference_precision(precision, self.device)
        self.dtype = DTYPES[self.precision]
        self.compiled = compile
        self.build_seconds = 0.0  # weights, copy to the device, compile and warm-up
        if self.device.type == "cpu":
            warn_cpu_once(self.precision)
        self.runner = cf.ThreadPoolExecutor(1, thread_name_prefix="backbone")
        self.built = self.runner.submit(self.build, spec, warm_up)
        if not background:
            self.ready()

    def submit(self, fn, *args) -> cf.Future:
        """Run fn(*args) on the runner thread, after the build (stage one's inference loop)."""
        return self.runner.submit(fn, *args)

    def ready(self) -> None:
        """Wait for the build; re-raise its error."""
        self.built.result()

    def close(self) -> None:
        """Let the runner thread end once its queued work is done."""
        self.runner.shutdown(wait=False)

    def build(self, spec: WeightsSpec, warm_up: tuple[int, int] | None) -> None:
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        if cuda:
            # Allocations and kernels of this thread go to our device, not to cuda:0
            # (DEVICES=cuda:1 in a process of its own).
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
        model = build_resnet50(spec).to(self.device, memory_format=torch.channels_last)
        self.model = model.to(self.dtype) if self.precision != "fp32" else model
        if self.compiled:
            # max-autotune searches kernels for the GPU (21,700 vs 13,900 images/s on the H100);
            # on a CPU it would only lengthen the compile. No CUDA graphs: the batcher's stream
            # and pinned buffers are ours, and the gain was measured without.
            self.model = torch.compile(self.model, mode=COMPILE_MODE if cuda else None, dynamic=False)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(shape) * 255
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(shape) * 255
        if warm_up and cuda:
            batch, size = warm_up
            with torch.inference_mode():
                self.forward(torch.zeros((batch, size, size, 3), dtype=torch.uint8, device=self.device))
        if cuda:
            # The weights, their cast and the constants were made on this thread's default
            # stream; stage one's batches run on a side stream that does not wait for it.
            torch.cuda.synchronize(self.device)
        self.build_seconds = time.perf_counter() - t0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, S, S, 3) uint8 on self.device -> (B, 2048) on self.device, compute dtype.

        Call it on the runner thread (stage one's batcher does, through `submit`) to use
        the kernels the warm-up chose; from another thread it works but searches again.
        """
        self.ready()
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC memory = channels_last
        x = ((x.float() - self.mean) / self.std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def extract(self, frames: torch.Tensor) -> np.ndarray:
        """frames (B, S, S, 3) uint8 CPU -> (B, 2048) float16 numpy, computed on the runner thread."""
        return self.submit(self.extract_here, frames).result()

    @torch.inference_mode()
    def extract_here(self, frames: torch.Tensor) -> np.ndarray:
        feats = self.embed(frames.to(self.device, non_blocking=True))
        assert feats.shape[-1] == FEATURE_DIM
        return feats.to(torch.float16).cpu().numpy()
