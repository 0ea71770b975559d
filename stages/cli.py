"""The `vidstore` command line (also `python -m stages`). Click lives only here.

Each command maps its options onto a frozen config and calls one plain function; the
Makefile targets pass their variables through as these options.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
from pathlib import Path

import click

from pipeline import allocator, console, store
from pipeline.config import store_root
from pipeline.errors import ConfigError, FFmpegMissing, StoreError

from .bench.config import BenchConfig, BenchError
from .extract.config import ExtractConfig
from .extract.errors import ClusterError, DatasetError, VideoError, WeightsError
from .samples.clips import SynthError
from .train.config import TrainConfig
from .zeroshot.prompts import TEMPLATE_SETS

# Shown as one line (exit status 1, or 2 with the usage line for a ConfigError).
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    StoreError,
    DatasetError,
    WeightsError,
    FFmpegMissing,
    ClusterError,
    SynthError,
    BenchError,
    VideoError,
)

# Each stage is imported inside the command that runs it: importing all of them (torchvision,
# the models, the benchmark) doubles the start of `vidstore --help` and of the store commands
# (3.6 s -> 7.9 s measured on the 2-core development machine). Their configs and errors,
# imported above, load no torch.


def user_facing(*also: type[BaseException]):
    """A decorator turning the user-facing errors (and `also`) into one `Error: <message>`
    line, no traceback.

    A bad option (ConfigError) is a usage error: exit status 2 with the usage line, as
    click does for its own option checks. Missing data, a corrupt or unwritable store,
    missing weights or ffmpeg are not mistakes in the command line: exit status 1 and no
    "Usage:" banner in front of the message.
    """

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except ConfigError as e:
                raise click.UsageError(str(e)) from None
            except USER_ERRORS + also as e:
                raise click.ClickException(str(e)) from None

        return wrapper

    return decorate


def on_interrupt(message: str):
    """A decorator: Ctrl-C prints what was kept and how to go on (instead of click's bare
    `Aborted!`), and exits 130 as a shell does for SIGINT."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except KeyboardInterrupt:
                console.say(f"\nInterrupted. {message}")
                sys.exit(130)

        return wrapper

    return decorate


# Stage one commits shard by shard and resumes from its manifest; stage two keeps no partial run.
STAGE_ONE_INTERRUPTED = (
    "Every shard committed so far is kept in the store; run the same command again to resume: "
    "only the videos not yet stored are decoded."
)
STAGE_TWO_INTERRUPTED = (
    "The unfinished run is lost (its directory, if made, is marked FAILED); run the command again to train from the start. "
    "Feature sets are untouched."
)

user_errors_as_messages = user_facing()
# evaluate / predict: a run directory or video that is not there is the user's to fix
missing_files_as_messages = user_facing(FileNotFoundError)


DEVICE_HELP = "auto | cpu | cuda | cuda:N (DEVICE=)."


def config_option(config: type, *decls: str, **kw):
    """A click option for a field of the config dataclass `config`, named by the option (`--shard-size`:
    shard_size) or by the name given after it (`"--size", "image_size"`). Its default, and its
    choices where the field lists some (pipeline.config.choice), are the dataclass's: each is
    written once, beside its field. A tuple field (--devices) is typed as one comma-separated
    string and keeps the default the call gives."""
    name = next((d for d in decls if not d.startswith("-")), None)
    name = name or decls[0].split("/")[0].lstrip("-").replace("-", "_")
    field = {f.name: f for f in dataclasses.fields(config)}[name]
    if "choices" in field.metadata:
        kw["type"] = click.Choice(field.metadata["choices"])
    if not isinstance(field.default, tuple):
        kw |= {"default": field.default, "show_default": field.default not in (None, "", 0, False)}
    return click.option(*decls, **kw)


class BackboneOption(click.Option):
    """--backbone, whose help lists the registered families (stages/extract/family_listing.py). It is
    read when the help is shown: finding the families imports the model libraries, which the
    command line's start does not."""

    def get_help_record(self, ctx: click.Context):
        from .extract.family_listing import backbone_help

        self.help = backbone_help()
        return super().get_help_record(ctx)


def extract_options(fn):
    """Options of ExtractConfig, shared by `features` and `demo`."""
    options = [
        config_option(ExtractConfig, "--dataset", help="Dataset adapter (DATASET=)."),
        config_option(
            ExtractConfig,
            "--data-dir",
            type=click.Path(path_type=Path),
            help="Dataset root; csv: the .csv file. Default data/<dataset> (DATA_DIR=).",
        ),
        config_option(
            ExtractConfig,
            "--features-root",
            type=click.Path(path_type=Path),
            help="Feature store root, default data/features (FEATURES_ROOT=).",
        ),
        config_option(ExtractConfig, "--frames", type=int, help="T frames per video; the cap with --fps (FRAMES=)."),
        config_option(
            ExtractConfig,
            "--fps",
            type=float,
            help="Sample at a fixed rate instead of T uniform segment centres (FPS=).",
        ),
        config_option(ExtractConfig, "--backbone", cls=BackboneOption),
        config_option(
            ExtractConfig,
            "--size",
            "image_size",
            type=int,
            help="Centre-crop size fed to the backbone, px; default the model's own (ResNet-50: 224) (SIZE=).",
        ),
        config_option(
            ExtractConfig,
            "--resize",
            type=int,
            help="Shorter side before the crop, px; default the model's ratio (ResNet-50: size*256/224; "
            "R(2+1)D: frames scaled to 128 x 171 at its 112) (RESIZE=).",
        ),
        config_option(
            ExtractConfig,
            "--weights",
            help="imagenet/pretrained (the published ones, from the library's cache) | random | "
            "/path/to/state_dict.pth or .safetensors (WEIGHTS=).",
        ),
        config_option(ExtractConfig, "--seed", type=int, help="Seed of --weights random (SEED=)."),
        config_option(ExtractConfig, "--precision", help="Backbone precision (PRECISION=)."),
        decoder_option(ExtractConfig, "In-process PyAV, or an ffmpeg process per video; part of the feature-set id"),
        config_option(ExtractConfig, "--device", help=DEVICE_HELP),
        config_option(
            ExtractConfig,
            "--devices",
            default="",
            help="One backbone process per device, e.g. cuda:0,cuda:1 (DEVICES=).",
        ),
        config_option(ExtractConfig, "--workers", type=int, help="Parallel decoders, default all cores (WORKERS=)."),
        config_option(
            ExtractConfig,
            "--gpu-batch",
            type=int,
            help="Frames (a video model's: clips) per backbone batch, default 512 on CUDA, 32 on CPU "
            "(a video model's: as many clips as hold that many 224 px frames) (GPU_BATCH=).",
        ),
        config_option(ExtractConfig, "--shard-size", type=int, help="Videos per shard (SHARD_SIZE=)."),
        config_option(
            ExtractConfig,
            "--timeout",
            type=float,
            help="Seconds allowed to one video (pyav) or to one ffmpeg call (ffmpeg-cli) (TIMEOUT=).",
        ),
        config_option(
            ExtractConfig,
            "--compile/--no-compile",
            help="torch.compile the backbone; pays off only on large sets (COMPILE=1).",
        ),
        config_option(ExtractConfig, "--scheduler", help="Run on Dask: local:N or tcp://host:8786 (SCHEDULER=)."),
        config_option(
            ExtractConfig,
            "--name",
            help="Dataset name in the store (default: derived from --dataset/--data-dir) (NAME=).",
        ),
        config_option(
            ExtractConfig,
            "--modality",
            help="rgb: ResNet-50 on the pictures; audio: the sound around each sampled frame (MODALITY=).",
        ),
        config_option(
            ExtractConfig,
            "--audio-features",
            help="Audio: logmel (per-band mean and std of a log-mel window, no weights) or vggish (AUDIO_FEATURES=).",
        ),
        config_option(
            ExtractConfig,
            "--audio-weights",
            help="Audio with vggish: vggish | random | /path/to/vggish.pth (AUDIO_WEIGHTS=).",
        ),
        config_option(
            ExtractConfig,
            "--audio-window",
            type=float,
            help="Audio: seconds of sound centred on each sampled frame (AUDIO_WINDOW=).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def decoder_option(cls: type, what: str):
    """--decoder, shared by `features`, `demo` (ExtractConfig) and `bench` (BenchConfig)."""
    return config_option(cls, "--decoder", help=f"{what} (DECODER=).")


def make_extract_config(**kw) -> ExtractConfig:
    kw["devices"] = tuple(d.strip() for d in (kw.get("devices") or "").split(",") if d.strip())
    return ExtractConfig(**kw)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """vidstore: an offline video feature store (stage one) and temporal heads (stage two)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@main.command()
@extract_options
@click.option(
    "--retry-failures",
    is_flag=True,
    help="Decode again the videos the set lists as failed (fixed files, a timeout under load); "
    "their shards are rewritten with the other videos copied (RETRY_FAILURES=1).",
)
@user_errors_as_messages
@on_interrupt(STAGE_ONE_INTERRUPTED)
def features(**kw) -> None:
    """Stage one: decode, embed with ResNet-50 and store (N, T, 2048) shards."""
    from stages.extract import extract_features

    extract_features(make_extract_config(**kw))


@main.command()
@config_option(
    BenchConfig,
    "--clips",
    type=int,
    help="Clips timed end to end and by the decode ceiling; default 8 on CPU, 2048 on CUDA (CLIPS=).",
)
@config_option(BenchConfig, "--seconds", type=float, help="Length of each generated clip, s (SECONDS=).")
@config_option(BenchConfig, "--workers", type=int, help="Stage one's decoders, default all cores (WORKERS=).")
@decoder_option(BenchConfig, "Stage one's decoder end to end; every decoder is timed alone")
@config_option(BenchConfig, "--device", help=DEVICE_HELP)
@config_option(BenchConfig, "--backbone", cls=BackboneOption)
@config_option(
    BenchConfig,
    "--weights",
    help="random (seeded, nothing downloads) | pretrained | /path/to/state_dict (WEIGHTS=).",
)
@config_option(
    BenchConfig,
    "--size",
    type=int,
    help="Crop fed to the backbone, px; default 112 on CPU (to finish in minutes), the model's own "
    "(ResNet-50: 224) on CUDA (SIZE=).",
)
@config_option(BenchConfig, "--frames", type=int, help="T frames sampled per video (FRAMES=).")
@config_option(
    BenchConfig,
    "--gpu-batch",
    type=int,
    help="Items per backbone batch (frames; a clip model's clips), default stage one's for the backbone: "
    "ResNet-50 32 on CPU, 512 on CUDA (GPU_BATCH=).",
)
@config_option(BenchConfig, "--precision", help="Backbone precision (PRECISION=).")
@config_option(
    BenchConfig,
    "--compile/--no-compile",
    help="Also measure torch.compile: compile time, speed-up, break-even (COMPILE=1).",
)
@config_option(
    BenchConfig,
    "--baseline-clips",
    type=int,
    help="Clips run through the seed method; default 2 on CPU, 16 on CUDA (BASELINE_CLIPS=).",
)
@config_option(
    BenchConfig, "--baseline-reader", help="How the seed method reads every frame; auto: OpenCV if installed."
)
@config_option(
    BenchConfig,
    "--backbone-seconds",
    type=float,
    help="How long to time the backbone alone; default 6 s on CPU, 10 s on CUDA.",
)
@config_option(
    BenchConfig,
    "--rounds",
    type=int,
    help="Alternating rounds of ceiling, end to end and baseline; the best of each counts (ROUNDS=).",
)
@config_option(
    BenchConfig,
    "--train-epochs",
    type=int,
    help="LSTM epochs timed for stage two; fewer are scaled to 50 and labelled EXTRAPOLATED (TRAIN_EPOCHS=).",
)
@config_option(
    BenchConfig,
    "--audio-clips",
    type=int,
    help="Clips with a sound track timed as an audio set (AUDIO_CLIPS=). [default: all of --clips on a CPU, 256 on CUDA]",
)
@config_option(BenchConfig, "--skip-train", is_flag=True, help="Do not time stage two (SKIP_TRAIN=1).")
@config_option(
    BenchConfig,
    "--devices",
    help="Also time end to end with one backbone process per device, e.g. cuda:0,cuda:0 (BENCH_DEVICES=).",
)
@config_option(
    BenchConfig,
    "--clips-dir",
    type=click.Path(path_type=Path),
    help="Where clips are generated and reused, default bench/clips.",
)
@config_option(BenchConfig, "--out", type=click.Path(path_type=Path), help="Results file, default bench/results.json.")
@user_errors_as_messages
def bench(**kw) -> None:
    """Stage one (BACKBONE=) against every decoder alone and the seed method; stage two's 50 epochs. Writes bench/results.json."""
    from stages.bench import run_bench

    run_bench(BenchConfig(**kw))


# ================================================================ stage two: train, evaluate, compare, predict
# (options map one to one onto stages.train.config.TrainConfig fields)
def train_options(fn):
    """Options of TrainConfig, shared by `train` and `compare`."""
    options = [
        config_option(
            TrainConfig,
            "--dataset",
            help="DATASET= as given to `features` (or a dataset name in the store) (DATASET=).",
        ),
        config_option(
            TrainConfig,
            "--data-dir",
            type=click.Path(path_type=Path),
            help="folder / csv: DATA_DIR= as given to `features`, which names the set in the store (DATA_DIR=).",
        ),
        config_option(
            TrainConfig, "--name", help="NAME= as given to `features`: the dataset's name in the store (NAME=)."
        ),
        config_option(
            TrainConfig,
            "--features",
            help="Feature-set id(s) or path(s), comma-separated; default: the dataset's set (FEATURES=).",
        ),
        config_option(
            TrainConfig,
            "--features-root",
            type=click.Path(path_type=Path),
            help="Store root, default data/features (FEATURES_ROOT=).",
        ),
        config_option(
            TrainConfig,
            "--modalities",
            default="",
            help="Each modality's default set for --dataset, comma-separated: rgb, audio or rgb,audio; "
            "default rgb, or with --features the sets' own (MODALITIES=).",
        ),
        config_option(TrainConfig, "--model", help="Temporal head (MODEL=)."),
        config_option(
            TrainConfig,
            "--fusion",
            help="Several modalities: early (concatenated per step), late (an encoder per modality) or gated "
            "(late, through context gating); lstm, gru, attention; other heads read the early input (FUSION=).",
        ),
        config_option(
            TrainConfig,
            "--modality-dropout",
            type=float,
            help="Several modalities, in training: chance that a video loses one of its modalities (never all) "
            "(MODALITY_DROPOUT=).",
        ),
        config_option(TrainConfig, "--split", help="Official split 1|2|3, or all: each split and the mean (SPLIT=)."),
        config_option(TrainConfig, "--epochs", type=int, help="Most epochs; early stopping may end sooner (EPOCHS=)."),
        config_option(TrainConfig, "--lr", type=float, help="AdamW peak learning rate (LR=)."),
        config_option(
            TrainConfig, "--batch", type=int, help="Videos per step; 0 = auto, 256 or fewer on small sets (BATCH=)."
        ),
        config_option(TrainConfig, "--seed", type=int, help="Seeds init, carving, shuffling, dropout (SEED=)."),
        config_option(
            TrainConfig,
            "--out",
            type=click.Path(path_type=Path),
            help="Run directory, default runs/<time>-<model>-split<split> (OUT=).",
        ),
        config_option(TrainConfig, "--device", help=DEVICE_HELP),
        config_option(TrainConfig, "--hidden", type=int, help="Recurrent state / TCN channels / transformer width."),
        config_option(TrainConfig, "--layers", type=int, help="Recurrent layers / TCN blocks / transformer layers."),
        config_option(TrainConfig, "--bidirectional/--unidirectional", help="Recurrent heads read both ways."),
        config_option(TrainConfig, "--dropout", type=float, help="Before the classifier and between layers."),
        config_option(
            TrainConfig, "--proj", type=int, help="Recurrent heads: learned D -> PROJ input projection; 0 = none."
        ),
        config_option(TrainConfig, "--weight-decay", type=float, help="AdamW weight decay (matrices only)."),
        config_option(TrainConfig, "--warmup-epochs", type=float, help="Linear warmup, then cosine decay."),
        config_option(TrainConfig, "--label-smoothing", type=float, help="Cross-entropy label smoothing."),
        config_option(TrainConfig, "--clip-grad", type=float, help="Max gradient norm; 0 = off."),
        config_option(
            TrainConfig,
            "--val-fraction",
            type=float,
            help="Validation share of the training split, carved by group (VAL_FRACTION=).",
        ),
        config_option(
            TrainConfig,
            "--test-fraction",
            type=float,
            help="Test share carved by group when the dataset has no test split (TEST_FRACTION=).",
        ),
        config_option(
            TrainConfig, "--patience", type=int, help="Epochs without validation gain before stopping; 0 = never."
        ),
        config_option(
            TrainConfig,
            "--precision",
            help="auto: fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16, else fp32.",
        ),
        config_option(
            TrainConfig,
            "--load",
            help="Whole in memory (on the GPU if any) or shard by shard; auto: memory when it fits.",
        ),
        config_option(TrainConfig, "--progress/--no-progress", help="A progress bar per epoch (NO_PROGRESS=1)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command("train")
@train_options
@user_errors_as_messages
@on_interrupt(STAGE_TWO_INTERRUPTED)
def train_command(**kw) -> None:
    """Stage two: train a temporal head on a feature set; write metrics, plots and the checkpoint."""
    from stages.train import train

    train(TrainConfig(**kw))


@main.command("evaluate")
@click.option(
    "--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory `train` printed (RUN=)."
)
@config_option(TrainConfig, "--device", help=DEVICE_HELP)
@missing_files_as_messages
def evaluate_command(run_dir: Path, device: str) -> None:
    """Re-evaluate a run's checkpoint(s) on its test split; rewrite its reports."""
    from stages.train import evaluate_run

    evaluate_run(run_dir, device)


@main.command("compare")
@train_options
@user_errors_as_messages
@on_interrupt(f"Heads trained so far keep their run directories. {STAGE_TWO_INTERRUPTED}")
def compare_command(**kw) -> None:
    """Train every head on the same split and data; print and write the table."""
    from stages.train.compare import compare  # the function: `stages.train.compare` is also its module

    compare(TrainConfig(**kw))


@main.command("predict")
@click.argument("video", type=click.Path(path_type=Path))
@click.option(
    "--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory `train` printed (RUN=)."
)
@click.option("--top", type=int, default=5, show_default=True, help="How many classes to print (TOP=).")
@config_option(TrainConfig, "--device", help=DEVICE_HELP)
@missing_files_as_messages
def predict_command(video: Path, run_dir: Path, top: int, device: str) -> None:
    """Stage one on one video file with the run's extraction settings, then the top classes."""
    from stages.predict import predict

    predict(video, run_dir, top, device)


@main.command("zeroshot")
@config_option(
    TrainConfig,
    "--features",
    help="The OpenCLIP feature set: id, unique prefix or directory; default: the dataset's set (FEATURES=).",
)
@config_option(TrainConfig, "--dataset", help="DATASET= as given to `features` (DATASET=).")
@config_option(TrainConfig, "--data-dir", type=click.Path(path_type=Path), help="DATA_DIR= as given to `features`.")
@config_option(TrainConfig, "--name", help="NAME= as given to `features` (NAME=).")
@config_option(
    TrainConfig, "--features-root", type=click.Path(path_type=Path), help="Store root, default data/features."
)
@config_option(TrainConfig, "--split", help="Official split 1|2|3, or all: each split and the mean (SPLIT=).")
@config_option(TrainConfig, "--seed", type=int, help="Seeds the test part carved where the dataset has none (SEED=).")
@config_option(
    TrainConfig, "--test-fraction", type=float, help="Test share carved by group where the dataset has no test split."
)
@click.option(
    "--templates",
    type=click.Choice(list(TEMPLATE_SETS)),
    default=next(iter(TEMPLATE_SETS)),
    show_default=True,
    help="CLIP's prompt templates for UCF101 (48) or Kinetics-700 (28) (TEMPLATES=).",
)
@config_option(
    TrainConfig, "--out", type=click.Path(path_type=Path), help="Run directory, default runs/<time>-zeroshot-split<k>."
)
@config_option(TrainConfig, "--device", help=DEVICE_HELP)
@user_errors_as_messages
def zeroshot_command(templates: str, **kw) -> None:
    """Classify an OpenCLIP set's test videos with its checkpoint's text tower, no training; write a run's reports."""
    from stages.zeroshot import zeroshot

    zeroshot(TrainConfig(**kw), templates)


# ================================================================ end of stage two


@main.command()
@extract_options
@config_option(TrainConfig, "--epochs", type=int, help="Stage two epochs (EPOCHS=).")
@user_errors_as_messages
@on_interrupt(f"Stage one: {STAGE_ONE_INTERRUPTED} Stage two: {STAGE_TWO_INTERRUPTED}")
def demo(epochs: int, **kw) -> None:
    """The main job end to end on the embedded sample: stage one, stage two, a prediction."""
    from stages.demo import run_demo

    run_demo(make_extract_config(**kw), epochs=epochs)


@main.command("backbones")
@click.option(
    "--markdown",
    type=click.Choice(["readme", "extraction", "architecture"]),
    help="Print instead the family table of that document (README.md, docs/extraction.md, docs/architecture.md), "
    "in Markdown (MARKDOWN=).",
)
def backbones_command(markdown: str | None) -> None:
    """The model families BACKBONE= and AUDIO_FEATURES= name: how each is written, examples, what its sets store."""
    from .extract.family_listing import doc_tables, listing

    click.echo(doc_tables()[markdown] if markdown else listing())


@main.command("allocator")
def allocator_command() -> None:
    """Which malloc this command and the processes it starts run with (VIDSTORE_ALLOCATOR=)."""
    click.echo(allocator.describe())


# ---------------------------------------------------------------- store catalog
@main.group("store")
def store_group() -> None:
    """The catalog: list, inspect, verify and clean feature sets."""


def store_root_option(fn):
    return click.option(
        "--features-root", type=click.Path(path_type=Path), help="Store root (FEATURES_ROOT=), default data/features."
    )(fn)


def find_set(features_root: Path | None, ref: str) -> Path:
    """A feature set by id (or unique id prefix), dataset/id, or directory path."""
    return store.find_feature_set(ref, store_root(features_root))


def selected_sets(features_root: Path | None, ref: str | None) -> list[Path]:
    """The set REF names, or every set under the root when there is no REF."""
    return [find_set(features_root, ref)] if ref else list(store.feature_sets(store_root(features_root)))


@store_group.command("list")
@store_root_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feature set, for scripts.")
@user_errors_as_messages
def store_list(features_root: Path | None, as_json: bool) -> None:
    """Every feature set under the store root, one line each."""
    records = store.list_sets(store_root(features_root))
    if as_json:
        for r in records:
            console.result(json.dumps(r))
        return
    if not records:
        console.result(f"no feature sets under {store_root(features_root)}")
        return
    console.result(format_table([store.row(r) for r in records]))
    console.result(
        f"\n{len(records)} feature set(s) under {store_root(features_root)}; `store info ID` for one of them"
    )


@store_group.command("info")
@click.argument("ref", required=False)
@store_root_option
@user_errors_as_messages
def store_info(ref: str | None, features_root: Path | None) -> None:
    """Full extraction config and split sizes of one feature set (the only one if no REF)."""
    root = store_root(features_root)
    sets = [] if ref else list(store.feature_sets(root))
    if not ref and not sets:
        raise click.ClickException(f"no feature sets under {root}; `make features` makes one")
    if not ref and len(sets) > 1:
        table = format_table([store.row(r) for r in store.list_sets(root)])
        raise click.UsageError(
            f"{len(sets)} feature sets under {root}; pass one's id (ID= for `make store-info`), a unique "
            f"prefix of it, or dataset/id:\n{table}"
        )
    console.result(store.describe(find_set(features_root, ref) if ref else sets[0]))


@store_group.command("verify")
@click.argument("ref", required=False)
@store_root_option
@click.option(
    "--repair", is_flag=True, help="Drop bad shards from the manifest (and disk) so the next run recomputes only them."
)
@user_errors_as_messages
def store_verify(ref: str | None, features_root: Path | None, repair: bool) -> None:
    """Recompute checksums; exit 1 if any shard is corrupt or missing and not repaired (all sets if no REF)."""
    sets = selected_sets(features_root, ref)
    if not sets:
        console.result(f"no feature sets under {store_root(features_root)}")
    bad = 0
    for d in sets:
        try:  # one unreadable manifest must not hide the state of the other sets
            problems, n = store.bad_shards(d), len(store.load_manifest(d)["shards"])
        except store.StoreError as e:
            problems, n = {"manifest": str(e)}, 0
        console.result(
            f"{d.parent.name}/{d.name}: {'OK' if not problems else 'CORRUPT'} ({console.plural(n, 'shard')} checked)"
        )
        for file, problem in problems.items():
            console.result(f"  {file}: {problem}")
        if repair and problems and "manifest" not in problems:
            store.drop_shards(d, list(problems))
            console.result(
                f"  repaired: dropped {len(problems)} shard(s); `make features` with the same settings recomputes just those"
            )
            problems = {}  # repaired: the set is consistent again, only smaller until the rerun
        bad += bool(problems)
    if bad:
        console.result(
            f"{bad} of {len(sets)} feature set(s) have problems"
            + (
                ": an unreadable manifest cannot be repaired; remove the set's directory and extract it again"
                if repair
                else ": `store verify --repair` drops the bad shards so that a rerun recomputes only them"
            )
        )
    sys.exit(1 if bad else 0)


@store_group.command("gc")
@click.argument("ref", required=False)
@store_root_option
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@user_errors_as_messages
def store_gc(ref: str | None, features_root: Path | None, dry_run: bool) -> None:
    """Remove temp files and unlisted shards left by crashed runs (all sets if no REF).

    Never touches a committed shard, the manifest, or a file whose shard a live run
    has claimed, so it is safe to run on a shared store while others extract.
    """
    sets = selected_sets(features_root, ref)
    total = files = 0
    for d in sets:
        for path, size in store.remove_garbage(d, dry_run=dry_run):
            console.result(f"{'would remove' if dry_run else 'removed'} {path} ({store.human_bytes(size)})")
            total, files = total + size, files + 1
    console.result(
        f"{'would free' if dry_run else 'freed'} {store.human_bytes(total)} in {files} file(s) of {len(sets)} feature set(s)"
    )


def format_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = lambda r: "  ".join(str(r[c]).ljust(widths[c]) for c in cols)
    return "\n".join([line({c: c for c in cols}), "  ".join("-" * widths[c] for c in cols), *map(line, rows)])


if __name__ == "__main__":
    main()
