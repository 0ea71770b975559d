"""Stage one: decode every video, embed its sampled steps with a model family, write the shards.

config.py       ExtractConfig, the feature-set identities, stage one's choices
errors.py       the errors only stage one raises
entry_points.py extract_features (a dataset), extract_video (one file), config_from_manifest
plan.py         the extraction plan: the family, weights, identity, which videos each shard holds
datasets.py     dataset adapters: UCF101, HMDB51, folder-per-class, CSV, the generated sample
extractors/     the model families behind one interface (base.py): resnet50, torchvision,
                timm and open_clip (frames), logmel_summary and vggish (sound windows);
                family_for(cfg) picks one
inputs.py       what the decoders hand a family: frames, or the log-mel windows of the sound track
decode/         the decoders behind one call, decode_video(path, DecodeJob): common.py (the job,
                sampling, the result types), pyav.py (the default: PyAV, the CLI's filter graph),
                processes.py (PyAV in one long-lived process per decoding thread), ffmpeg_cli.py
                (DECODER=ffmpeg-cli: an ffmpeg process per video), sound.py (the audio track)
logmel.py       the log-mel front end (VGGish's) and its time alignment
weights.py      the one weights policy: published (cached), a local file, or seeded random
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
    "ModelThread": "model_thread",
    "WeightsSpec": "weights",
    "build_resnet50": "extractors.resnet50",
    "decode_video": "decode",
    "DecodeJob": "decode",
    "decoder_processes": "decode",
    "decoder_versions": "decode",
    "ffmpeg_version": "decode",
    "decode_threads": "decode",
    "video_info": "decode",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
