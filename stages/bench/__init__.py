"""`make bench`: how fast stage one is, next to what bounds it and what it replaces.

One run, on the same generated UCF101-like clips (320x240, 25 fps, mpeg4 in AVI; stages/samples/bench_clips.py):

    end to end   stage one with the project's defaults (extract_features) into a temp store
    decoders     each of stage one's decoders alone (pyav, ffmpeg-cli) on the same clips, as
                 stage one calls it, one thread per core: CPU ms per video (every thread and
                 child process) and videos/s; the fastest is the decode ceiling, what stage
                 one could reach if the rest were free
    backbone     ResNet-50 alone on synthetic frames, stage one's settings; with
                 --compile also torch.compile's cost, gain and break-even dataset size
    baseline     the seed articles' method: every frame read, a fresh fp32 forward per
                 frame, batch of one, on the first few of the same clips
    train        stage two: 50 LSTM epochs on UCF101-sized features, loading included

One module per measurement (config, stage_one, decoders, model, baseline, training), the
report (report.py) and the run that calls them in rounds (run.py).

It prints a table with the ratios and the profile of stage one, and writes
bench/results.json. Weights are seeded random (speed does not depend on their values,
and no download is needed). On a CPU the defaults are small (8 clips, 112 px instead of
224, so it finishes in minutes) and the output says so; on CUDA they are UCF101-scale.
Compare figures of one run with each other: a shared machine is noisy.
"""

from pipeline.lazy import lazy_exports

# Public names -> their module, imported on first use (the command line reads BenchConfig's
# options without loading torch and both stages).
PUBLIC = {
    "BenchConfig": "config",
    "BenchError": "config",
    "TIMED_DECODERS": "decoders",
    "run_bench": "run",
    "time_training": "training",
    "write_synthetic_set": "training",
}
__all__ = sorted(PUBLIC)

__getattr__ = lazy_exports(__name__, PUBLIC)
