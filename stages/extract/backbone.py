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
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

from pipeline import console
from pipeline.config import FEATURE_DIM, IMAGENET_MEAN, IMAGENET_STD
from pipeline.devices import DTYPES, inference_precision, resolve_device

from .weights import Checkpoint, WeightsSpec, check_shapes, load_state_dict, resolve

IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
# torch.compile's mode on CUDA: one compile searches kernels for this GPU (minutes).
COMPILE_MODE = "max-autotune-no-cudagraphs"


def imagenet_cache_path() -> Path:
    """Where torchvision's weights API caches the ImageNet checkpoint (TORCH_HOME aware)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def check_fits_resnet50(state: dict, path: Path) -> None:
    """Every trunk tensor present with the right shape; fc may differ or be absent (it is replaced)."""
    with torch.device("meta"):  # shapes only: no memory, no init cost
        skeleton = torchvision.models.resnet50(weights=None)
    expected = {k: v.shape for k, v in skeleton.state_dict().items() if not k.startswith("fc.")}
    check_shapes(
        expected, {k: v for k, v in state.items() if not k.startswith("fc.")}, path, RESNET50.option, "ResNet-50"
    )


RESNET50 = Checkpoint(
    name="ImageNet",
    flag="--weights",
    variable="WEIGHTS",
    file_hint="resnet50.pth",
    pretrained="imagenet",
    identity=f"torchvision:{IMAGENET_WEIGHTS.name}",
    cache_path=imagenet_cache_path,
    download=lambda: IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True),
    check=check_fits_resnet50,
    what="ImageNet features",
)


def resolve_weights(
    weights: str, seed: int = 0, fallback_to_random: bool = False, download_timeout: float = 20.0
) -> WeightsSpec:
    """WEIGHTS=: imagenet (torchvision's IMAGENET1K_V2, downloaded once into the torch hub cache), a
    path to a state dict, or random (seeded). With `fallback_to_random` (the embedded sample only),
    an unreachable download falls back to random weights, loudly; anywhere else it is an error."""
    return resolve(RESNET50, weights, seed, fallback_to_random, download_timeout)


def build_resnet50(spec: WeightsSpec) -> torch.nn.Module:
    """ResNet-50 trunk with fc replaced by Identity: (B, 3, H, W) -> (B, 2048)."""
    if spec.kind == "random":
        torch.manual_seed(spec.seed)
        model = torchvision.models.resnet50(weights=None)
    else:
        model = torchvision.models.resnet50(weights=None)
        state = load_state_dict(spec.file, RESNET50.option)
        check_fits_resnet50(state, spec.file)
        model.load_state_dict(state, strict=False)
    model.fc = torch.nn.Identity()
    return model.eval()


@functools.cache
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
        model = build_resnet50(spec).to(self.device).to(memory_format=torch.channels_last)
        self.model = model.to(self.dtype) if self.precision != "fp32" else model
        if self.compiled:
            # max-autotune searches kernels for the GPU (21,700 vs 13,900 images/s on the H100);
            # on a CPU it would only lengthen the compile. No CUDA graphs: the batcher's stream
            # and pinned buffers are ours, and the gain was measured without.
            # torch.compile returns a callable wrapping the module, typed as a plain function
            self.model = torch.compile(self.model, mode=COMPILE_MODE if cuda else None, dynamic=False)  # type: ignore[assignment]
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
