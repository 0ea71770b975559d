"""Stage one: decode every video, embed its sampled frames with ResNet-50, write the shards.

stage.py        extract_features (a dataset), extract_video (one file), config_from_manifest
plan.py         the extraction plan: settings, weights, identity, which videos each shard holds
datasets.py     dataset adapters: UCF101, HMDB51, folder-per-class, CSV, the generated sample
decode.py       the decoders behind one call: probe, choose frame indices, decode only those frames into a slot
decode_pyav.py  the default decoder: PyAV (its wheel bundles FFmpeg), the CLI's filter graph
decode_procs.py how stage one runs it on every core: one long-lived PyAV process per decoding thread
decode_cli.py   DECODER=ffmpeg-cli: an ffmpeg process per video (the benchmark's reference)
video.py        what both share: preflight checks, the AVI header, sampling, the result types
backbone.py     weights policy, ResNet-50 on its own thread: uint8 frames -> 2048-d features
batching.py     frame slots and the inference loop: frames of many videos per batch
runner.py       the shard runner, and the sink a local run commits through
local.py        this machine: one process, or one backbone process per device (DEVICES=)
distributed.py  a Dask cluster: one task per shard, the driver commits
retry.py        --retry-failures: rewrite a shard whose failed videos now decode
"""

__all__ = ["config_from_manifest", "extract_features", "extract_video"]


def __getattr__(name: str):
    # Imported on first use, so that a decoder process (decode_procs.py), which imports
    # stages.extract.decode_pyav, loads PyAV and numpy only, not torch and the stage.
    if name in __all__:
        from . import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
