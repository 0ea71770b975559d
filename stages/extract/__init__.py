"""Stage one: decode every video, embed its sampled steps with a model family, write the shards.

config.py       ExtractConfig, the feature-set identities, stage one's choices
errors.py       the errors only stage one raises
entry_points.py extract_features (a dataset), extract_video (one file), config_from_manifest
plan.py         the extraction plan: the family, weights, identity, which videos each shard holds
datasets.py     dataset adapters: UCF101, HMDB51, folder-per-class, CSV, the generated sample
families.py     the registry of model families (each family module registers itself)
family_listing.py --backbone's help, `vidstore backbones` and the docs' family tables, from the registry
extractors/     the model families behind one interface (base.py); family_for(cfg) picks one
inputs.py       what the decoders hand a family: frames, or the log-mel windows of the sound track
decode.py       the picture decoders behind one call: probe, choose frame indices, decode only those frames
decode_pyav.py  the default decoder: PyAV (its wheel bundles FFmpeg), the CLI's filter graph
decode_procs.py how stage one runs it on every core: one long-lived PyAV process per decoding thread
decode_ffmpeg_cli.py  DECODER=ffmpeg-cli: an ffmpeg process per video (the benchmark's reference)
decode_common.py what both share: preflight checks, the AVI header, sampling, the result types
decode_sound.py the first audio stream of a file as 16 kHz mono
logmel.py       the log-mel front end (VGGish's) and its time alignment
weights.py      the one weights policy: published (cached), a local file, or seeded random,
                built through each family's hooks
model_thread.py a family's model on one device, on a thread of its own
batching.py     frame slots and the inference loop: items of many videos per batch
runner.py       the shard runner (every family), and the sink a local run commits through
local.py        this machine: one process, or one model process per device (DEVICES=)
distributed.py  a Dask cluster: one task per shard, the driver commits
retry.py        --retry-failures: rewrite a shard whose failed videos now decode
"""

from pipeline.lazy import lazy_exports

# The stage's public names -> the module that holds each (what the bench, predict and the
# command line use; anything else is internal to the stage).
PUBLIC = {
    "extract_features": "entry_points",
    "extract_video": "entry_points",
    "config_from_manifest": "entry_points",
    "family_for": "extractors",
    "Extractor": "extractors",
    "Preprocessing": "extractors",
    "ModelThread": "model_thread",
    "WeightsSpec": "weights",
    "build_resnet50": "extractors.resnet50",
    "decode_video": "decode",
    "decoder_processes": "decode",
    "decoder_versions": "decode",
    "ffmpeg_version": "decode",
    "decode_threads": "decode",
    "video_info": "decode",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
