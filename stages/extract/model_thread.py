"""A family's model on one device, on a long-lived thread of its own: the one way stage one runs a model.

Every piece of work (the build, the warm-up, stage one's batches through `submit`,
`extract`) runs on that thread. cuDNN caches its kernel search (cudnn.benchmark) per
thread, so the search paid by the warm-up is the one every later batch uses, across
shards, Dask tasks and runs in the same process; a search on another thread would be
paid again, inside the timings.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import time

import numpy as np
import torch

from pipeline import console
from pipeline.devices import DTYPES, inference_precision, resolve_device

from .extractors import SOUND, Extractor
from .weights import WeightsSpec

# torch.compile's mode on CUDA: one compile searches kernels for this GPU (minutes).
COMPILE_MODE = "max-autotune-no-cudagraphs"


@functools.cache
def warn_cpu_once(family: str, precision: str) -> None:
    console.say(f"note: no CUDA device: {family} runs on the CPU ({precision}), expect a few images/s")


class ModelThread:
    """Decoded items -> features on one device, with one family's model.

    `extract(items)`: (B, *item_shape) CPU tensor -> (B, D) float16 numpy.
    `embed(x)`: x (B, *item_shape) already on the device -> (B, D) on the device, in the
    compute dtype, without waiting for the GPU (stage one's batcher overlaps it).
    With `compile`, every batch must have the same size (batching.py pads the last one):
    a new shape would compile again, and one compile takes minutes (docs/bench.md).

    background: return at once while the thread builds the model (weights, copy to the
    device, compile), so stage one's decoders start meanwhile; embed/extract wait for it
    (and re-raise its error). warm_up (batch size), on CUDA: also run one batch of that
    size on the thread, so cuDNN's search (or the compile) is paid before the first frames.
    """

    def __init__(
        self,
        family: Extractor,
        spec: WeightsSpec | None,
        device: str = "auto",
        precision: str = "auto",
        compile: bool = False,
        background: bool = False,
        warm_up: int | None = None,
    ):
        self.family = family
        self.device = resolve_device(device)
        if self.device.type == "cuda" and self.device.index is None:  # "cuda": the caller's current GPU, by number,
            self.device = torch.device(
                "cuda", torch.cuda.current_device()
            )  # so that the runner thread binds the same one
        self.precision = inference_precision(precision, self.device)
        self.dtype = DTYPES[self.precision]
        self.compiled = compile
        self.build_seconds = 0.0  # weights, copy to the device, compile and warm-up
        if self.device.type == "cpu" and family.decodes != SOUND:
            warn_cpu_once(family.family, self.precision)
        self.runner = cf.ThreadPoolExecutor(1, thread_name_prefix="model")
        self.built = self.runner.submit(self.build, spec, warm_up)
        if not background:
            self.ready()

    def submit(self, fn, *args) -> cf.Future:
        """Run fn(*args) on the model's thread, after the build (stage one's inference loop)."""
        return self.runner.submit(fn, *args)

    def ready(self) -> None:
        """Wait for the build; re-raise its error."""
        self.built.result()

    def close(self) -> None:
        """Let the thread end once its queued work is done."""
        self.runner.shutdown(wait=False)

    def build(self, spec: WeightsSpec | None, warm_up: int | None) -> None:
        t0 = time.perf_counter()
        cuda = self.device.type == "cuda"
        if cuda:
            # Allocations and kernels of this thread go to our device, not to cuda:0
            # (DEVICES=cuda:1 in a process of its own).
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed input size: pick the fastest kernels once
        loaded = self.family.load(spec, self.device, self.dtype)
        self.model, self.prepare = loaded.model, loaded.prepare
        if self.compiled:
            # max-autotune searches kernels for the GPU (the gain: docs/bench.md, "Figures behind the code");
            # on a CPU it would only lengthen the compile. No CUDA graphs: the batcher's stream
            # and pinned buffers are ours, and the gain was measured without.
            # torch.compile returns a callable wrapping the module, typed as a plain function
            self.model = torch.compile(self.model, mode=COMPILE_MODE if cuda else None, dynamic=False)  # type: ignore[assignment]
        if warm_up and cuda:
            shape = (warm_up, *self.family.item_shape())
            with torch.inference_mode():
                self.forward(torch.zeros(shape, dtype=self.family.item_dtype, device=self.device))
        if cuda:
            # The weights, their cast and the constants were made on this thread's default
            # stream; stage one's batches run on a side stream that does not wait for it.
            torch.cuda.synchronize(self.device)
        self.build_seconds = time.perf_counter() - t0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, *item_shape) on self.device -> (B, D) on self.device, compute dtype.

        Call it on the model's thread (stage one's batcher does, through `submit`) to use
        the kernels the warm-up chose; from another thread it works but searches again.
        """
        self.ready()
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare(x))

    def extract(self, items: torch.Tensor) -> np.ndarray:
        """items (B, *item_shape) CPU -> (B, D) float16 numpy, computed on the model's thread."""
        return self.submit(self.extract_here, items).result()

    @torch.inference_mode()
    def extract_here(self, items: torch.Tensor) -> np.ndarray:
        feats = self.embed(items.to(self.device, non_blocking=True))
        assert feats.shape[-1] == self.family.dim
        return feats.to(torch.float16).cpu().numpy()
