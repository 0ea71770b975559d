"""Which device runs the models, and at which precision, for both stages.

    resolve_device("auto")            cuda when torch sees a GPU, else cpu
    inference_precision(p, device)    stage one's backbone: auto = fp16 on CUDA, fp32 on a CPU
    training_precision(p, device)     stage two's autocast: auto = fp16 on CUDA, bf16 on a CPU
                                      that multiplies bf16 natively, else fp32

A precision the device cannot run is a ConfigError naming the option, before any work.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ConfigError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str = "auto") -> torch.device:
    """auto -> cuda when available, else cpu; an unavailable cuda is an error naming the option."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device (DEVICE=) {device!r}: CUDA is not available on this machine")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision (PRECISION=) fp16: only on CUDA; use bf16 or fp32 on a CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(
            f"--precision (PRECISION=) bf16: {torch.cuda.get_device_name(device)} has no native bf16; use fp16 or fp32"
        )


def inference_precision(precision: str, device: torch.device) -> str:
    """Stage one's backbone precision: auto -> fp16 on CUDA, fp32 on a CPU."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    check_precision(precision, device)
    return precision


def training_precision(precision: str, device: torch.device) -> tuple[torch.dtype | None, torch.dtype]:
    """Stage two's (autocast dtype or None, dtype of the standardised features kept in memory).

    auto: fp16 AMP on CUDA (with a GradScaler: cuDNN's RNNs take fp16 everywhere), bf16
    autocast on a CPU with native bf16, else fp32.
    """
    if precision == "auto":
        if device.type == "cuda":
            precision = "fp16"
        else:
            precision = "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp32":
        return None, torch.float32
    check_precision(precision, device)
    return DTYPES[precision], DTYPES[precision]
