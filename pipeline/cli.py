"""The `vidstore` command line (also `python -m pipeline`). Click lives only here.

Each command maps its options onto a frozen config and calls one plain function; the
Makefile targets pass their variables through as these options.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import console, store
from .config import AUDIO_FEATURES, DECODERS, MODALITIES, ExtractConfig, TrainConfig, store_root
from .errors import USER_ERRORS, ConfigError

# Each stage is imported inside the command that runs it: importing all of them (torchvision,
# the models, the benchmark) doubles the start of `vidstore --help` and of the store commands
# (3.6 s -> 7.9 s measured on the 2-core development machine). No stage imports this module,
# so these imports close no cycle.


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


def extract_options(fn):
    """Options of ExtractConfig, shared by `features` and `demo`."""
    options = [
        click.option(
            "--dataset",
            type=click.Choice(["sample", "ucf101", "hmdb51", "folder", "csv"]),
            default="sample",
            show_default=True,
            help="Dataset adapter (DATASET=).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            help="Dataset root; csv: the .csv file. Default data/<dataset> (DATA_DIR=).",
        ),
        click.option(
            "--features-root",
            type=click.Path(path_type=Path),
            help="Feature store root, default data/features (FEATURES_ROOT=).",
        ),
        click.option(
            "--frames",
            type=int,
            default=16,
            show_default=True,
            help="T frames per video; the cap with --fps (FRAMES=).",
        ),
        click.option("--fps", type=float, help="Sample at a fixed rate instead of T uniform segment centres (FPS=)."),
        click.option(
            "--size",
            "image_size",
            type=int,
            default=224,
            show_default=True,
            help="Centre-crop size fed to ResNet-50, px (SIZE=).",
        ),
        click.option("--resize", type=int, help="Shorter side before the crop, px (default size*256/224)."),
        click.option(
            "--weights",
            default="imagenet",
            show_default=True,
            help="imagenet | random | /path/to/resnet50.pth (WEIGHTS=).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of --weights random (SEED=)."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
            default="auto",
            show_default=True,
            help="Backbone precision (PRECISION=).",
        ),
        decoder_option("In-process PyAV, or an ffmpeg process per video; part of the feature-set id"),
        click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (DEVICE=)."),
        click.option("--devices", default="", help="One backbone process per device, e.g. cuda:0,cuda:1 (DEVICES=)."),
        click.option("--workers", type=int, default=0, help="Parallel decoders, default all cores (WORKERS=)."),
        click.option(
            "--gpu-batch",
            type=int,
            default=0,
            help="Frames per backbone batch, default 512 on CUDA, 32 on CPU (GPU_BATCH=).",
        ),
        click.option("--shard-size", type=int, default=256, show_default=True, help="Videos per shard (SHARD_SIZE=)."),
        click.option(
            "--timeout",
            type=float,
            default=60.0,
            show_default=True,
            help="Seconds allowed to one video (pyav) or to one ffmpeg call (ffmpeg-cli) (TIMEOUT=).",
        ),
        click.option(
            "--compile/--no-compile",
            default=False,
            help="torch.compile the backbone; pays off only on large sets (COMPILE=1).",
        ),
        click.option("--scheduler", help="Run on Dask: local:N or tcp://host:8786 (SCHEDULER=)."),
        click.option("--name", help="Dataset name in the store (default: derived from --dataset/--data-dir) (NAME=)."),
        click.option(
            "--modality",
            type=click.Choice(MODALITIES),
            default="rgb",
            show_default=True,
            help="rgb: ResNet-50 on the pictures; audio: the sound around each sampled frame (MODALITY=).",
        ),
        click.option(
            "--audio-features",
            type=click.Choice(AUDIO_FEATURES),
            default="logmel",
            show_default=True,
            help="Audio: logmel (per-band mean and std of a log-mel window, no weights) or vggish (AUDIO_FEATURES=).",
        ),
        click.option(
            "--audio-weights",
            default="vggish",
            show_default=True,
            help="Audio with vggish: vggish | random | /path/to/vggish.pth (AUDIO_WEIGHTS=).",
        ),
        click.option(
            "--audio-window",
            type=float,
            default=0.96,
            show_default=True,
            help="Audio: seconds of sound centred on each sampled frame (AUDIO_WINDOW=).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def decoder_option(what: str):
    """--decoder, shared by `features`, `demo` and `bench`."""
    return click.option(
        "--decoder",
        type=click.Choice(DECODERS),
        default=DECODERS[0],
        show_default=True,
        help=f"{what} (DECODER=).",
    )


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
@click.option(
    "--clips",
    type=int,
    default=0,
    help="Clips timed end to end and by the decode ceiling; default 8 on CPU, 2048 on CUDA (CLIPS=).",
)
@click.option(
    "--seconds", type=float, default=7.0, show_default=True, help="Length of each generated clip, s (SECONDS=)."
)
@click.option("--workers", type=int, default=0, help="Stage one's decoders, default all cores (WORKERS=).")
@decoder_option("Stage one's decoder end to end; every decoder is timed alone")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (DEVICE=).")
@click.option(
    "--size",
    type=int,
    default=0,
    help="Crop fed to ResNet-50, px; default 112 on CPU (to finish in minutes), 224 on CUDA (SIZE=).",
)
@click.option("--frames", type=int, default=16, show_default=True, help="T frames sampled per video (FRAMES=).")
@click.option(
    "--gpu-batch",
    type=int,
    default=0,
    help="Frames per backbone batch, default stage one's: 32 on CPU, 512 on CUDA (GPU_BATCH=).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="Backbone precision (PRECISION=).",
)
@click.option(
    "--compile/--no-compile",
    default=False,
    help="Also measure torch.compile: compile time, speed-up, break-even (COMPILE=1).",
)
@click.option(
    "--baseline-clips",
    type=int,
    default=0,
    help="Clips run through the seed method; default 2 on CPU, 16 on CUDA (BASELINE_CLIPS=).",
)
@click.option(
    "--baseline-reader",
    type=click.Choice(["auto", "opencv", "ffmpeg"]),
    default="auto",
    show_default=True,
    help="How the seed method reads every frame; auto: OpenCV if installed.",
)
@click.option(
    "--backbone-seconds",
    type=float,
    default=0.0,
    help="How long to time the backbone alone; default 6 s on CPU, 10 s on CUDA.",
)
@click.option(
    "--rounds",
    type=int,
    default=2,
    show_default=True,
    help="Alternating rounds of ceiling, end to end and baseline; the best of each counts (ROUNDS=).",
)
@click.option(
    "--train-epochs",
    type=int,
    default=50,
    show_default=True,
    help="LSTM epochs timed for stage two; fewer are scaled to 50 and labelled EXTRAPOLATED (TRAIN_EPOCHS=).",
)
@click.option(
    "--audio-clips",
    type=int,
    default=0,
    help="Clips with a sound track timed as an audio set (AUDIO_CLIPS=). [default: all of --clips on a CPU, 256 on CUDA]",
)
@click.option("--skip-train", is_flag=True, help="Do not time stage two (SKIP_TRAIN=1).")
@click.option(
    "--devices",
    default="",
    help="Also time end to end with one backbone process per device, e.g. cuda:0,cuda:0 (BENCH_DEVICES=).",
)
@click.option(
    "--clips-dir", type=click.Path(path_type=Path), help="Where clips are generated and reused, default bench/clips."
)
@click.option("--out", type=click.Path(path_type=Path), help="Results file, default bench/results.json.")
@user_errors_as_messages
def bench(**kw) -> None:
    """Stage one against every decoder alone and the seed method; stage two's 50 epochs. Writes bench/results.json."""
    from stages.bench import BenchConfig, run_bench

    run_bench(BenchConfig(**kw))


# ================================================================ stage two: train, evaluate, compare, predict
# (owned by stage two; options map one to one onto pipeline.config.TrainConfig fields,
# whose defaults are the only ones)
def train_default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def train_options(fn):
    """Options of TrainConfig, shared by `train` and `compare`."""
    d = train_default
    options = [
        click.option(
            "--dataset",
            default=d("dataset"),
            show_default=True,
            help="DATASET= as given to `features` (or a dataset name in the store) (DATASET=).",
        ),
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path),
            help="folder / csv: DATA_DIR= as given to `features`, which names the set in the store (DATA_DIR=).",
        ),
        click.option("--name", help="NAME= as given to `features`: the dataset's name in the store (NAME=)."),
        click.option(
            "--features", help="Feature-set id(s) or path(s), comma-separated; default: the dataset's set (FEATURES=)."
        ),
        click.option(
            "--features-root",
            type=click.Path(path_type=Path),
            help="Store root, default data/features (FEATURES_ROOT=).",
        ),
        click.option(
            "--modalities",
            default="",
            help="Each modality's default set for --dataset, comma-separated: rgb, audio or rgb,audio; "
            "default rgb, or with --features the sets' own (MODALITIES=).",
        ),
        click.option(
            "--model",
            type=click.Choice(TrainConfig.HEADS),
            default=d("model"),
            show_default=True,
            help="Temporal head (MODEL=).",
        ),
        click.option(
            "--fusion",
            type=click.Choice(TrainConfig.FUSIONS),
            default=d("fusion"),
            show_default=True,
            help="Several modalities: early (concatenated per step), late (an encoder per modality) or gated "
            "(late, through context gating); lstm, gru, attention; other heads read the early input (FUSION=).",
        ),
        click.option(
            "--modality-dropout",
            type=float,
            default=d("modality_dropout"),
            show_default=True,
            help="Several modalities, in training: chance that a video loses one of its modalities (never all) "
            "(MODALITY_DROPOUT=).",
        ),
        click.option(
            "--split",
            default=d("split"),
            show_default=True,
            help="Official split 1|2|3, or all: each split and the mean (SPLIT=).",
        ),
        click.option(
            "--epochs",
            type=int,
            default=d("epochs"),
            show_default=True,
            help="Most epochs; early stopping may end sooner (EPOCHS=).",
        ),
        click.option("--lr", type=float, default=d("lr"), show_default=True, help="AdamW peak learning rate (LR=)."),
        click.option(
            "--batch",
            type=int,
            default=d("batch"),
            show_default=True,
            help="Videos per step; 0 = auto, 256 or fewer on small sets (BATCH=).",
        ),
        click.option(
            "--seed",
            type=int,
            default=d("seed"),
            show_default=True,
            help="Seeds init, carving, shuffling, dropout (SEED=).",
        ),
        click.option(
            "--out",
            type=click.Path(path_type=Path),
            help="Run directory, default runs/<time>-<model>-split<split> (OUT=).",
        ),
        click.option("--device", default=d("device"), show_default=True, help="auto | cpu | cuda | cuda:N (DEVICE=)."),
        click.option(
            "--hidden",
            type=int,
            default=d("hidden"),
            show_default=True,
            help="Recurrent state / TCN channels / transformer width.",
        ),
        click.option(
            "--layers",
            type=int,
            default=d("layers"),
            show_default=True,
            help="Recurrent layers / TCN blocks / transformer layers.",
        ),
        click.option(
            "--bidirectional/--unidirectional",
            default=d("bidirectional"),
            show_default=True,
            help="Recurrent heads read both ways.",
        ),
        click.option(
            "--dropout",
            type=float,
            default=d("dropout"),
            show_default=True,
            help="Before the classifier and between layers.",
        ),
        click.option(
            "--proj",
            type=int,
            default=d("proj"),
            show_default=True,
            help="Recurrent heads: learned D -> PROJ input projection; 0 = none.",
        ),
        click.option(
            "--weight-decay",
            type=float,
            default=d("weight_decay"),
            show_default=True,
            help="AdamW weight decay (matrices only).",
        ),
        click.option(
            "--warmup-epochs",
            type=float,
            default=d("warmup_epochs"),
            show_default=True,
            help="Linear warmup, then cosine decay.",
        ),
        click.option(
            "--label-smoothing",
            type=float,
            default=d("label_smoothing"),
            show_default=True,
            help="Cross-entropy label smoothing.",
        ),
        click.option(
            "--clip-grad", type=float, default=d("clip_grad"), show_default=True, help="Max gradient norm; 0 = off."
        ),
        click.option(
            "--val-fraction",
            type=float,
            default=d("val_fraction"),
            show_default=True,
            help="Validation share of the training split, carved by group (VAL_FRACTION=).",
        ),
        click.option(
            "--test-fraction",
            type=float,
            default=d("test_fraction"),
            show_default=True,
            help="Test share carved by group when the dataset has no test split (TEST_FRACTION=).",
        ),
        click.option(
            "--patience",
            type=int,
            default=d("patience"),
            show_default=True,
            help="Epochs without validation gain before stopping; 0 = never.",
        ),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
            default=d("precision"),
            show_default=True,
            help="auto: fp16 AMP on CUDA, bf16 autocast on CPUs with native bf16, else fp32.",
        ),
        click.option(
            "--load",
            type=click.Choice(["auto", "memory", "stream"]),
            default=d("load"),
            show_default=True,
            help="Whole in memory (on the GPU if any) or shard by shard; auto: memory when it fits.",
        ),
        click.option(
            "--progress/--no-progress",
            default=d("progress"),
            show_default=True,
            help="A progress bar per epoch (NO_PROGRESS=1).",
        ),
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
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (DEVICE=).")
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
    from stages.train import compare

    compare(TrainConfig(**kw))


@main.command("predict")
@click.argument("video", type=click.Path(path_type=Path))
@click.option(
    "--run", "run_dir", required=True, type=click.Path(path_type=Path), help="Run directory `train` printed (RUN=)."
)
@click.option("--top", type=int, default=5, show_default=True, help="How many classes to print (TOP=).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | cuda:N (DEVICE=).")
@missing_files_as_messages
def predict_command(video: Path, run_dir: Path, top: int, device: str) -> None:
    """Stage one on one video file with the run's extraction settings, then the top classes."""
    from stages.predict import predict

    predict(video, run_dir, top, device)


# ================================================================ end of stage two


@main.command()
@extract_options
@click.option("--epochs", type=int, default=30, show_default=True, help="Stage two epochs (EPOCHS=).")
@user_errors_as_messages
@on_interrupt(f"Stage one: {STAGE_ONE_INTERRUPTED} Stage two: {STAGE_TWO_INTERRUPTED}")
def demo(epochs: int, **kw) -> None:
    """The main job end to end on the embedded sample: stage one, stage two, a prediction."""
    from stages.demo import run_demo

    run_demo(make_extract_config(**kw), epochs=epochs)


@main.command("allocator")
def allocator_command() -> None:
    """Which malloc this command and the processes it starts run with (VIDSTORE_ALLOCATOR=)."""
    from . import allocator

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
