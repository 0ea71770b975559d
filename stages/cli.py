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
from .export.config import ExportConfig
from .extract.config import FRAMES_ALL, ExtractConfig
from .extract.errors import ClusterError, DatasetError, VideoError, WeightsError
from .localize.config import LocalizeConfig
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
# the models, the benchmark) would make `vidstore --help` and the store commands wait for torch
# and every model library (docs/bench.md, "Figures behind the code"). Their configs and errors, imported above, load no torch.


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


class MakeOption(click.Option):
    """A click option that knows its Make variable: the Makefile passes `VAR=value` as this
    option (options.mk is generated from these, stages/cli_docs.py)."""

    def __init__(self, *args, make_var: str, **kw):
        super().__init__(*args, **kw)
        self.make_var = make_var

    @property
    def make_switch(self) -> str | None:
        """For a boolean option, the switch its Make variable turns on (`--no-progress`); None for a value."""
        if not self.is_flag:
            return None
        return (self.secondary_opts if self.default is True else self.opts)[0]


class BackboneOption(MakeOption):
    """--backbone, whose --help also lists the registered families' forms (stages/extract/family_listing.py).
    They are read only when the help is shown: finding the families imports the model libraries,
    which the command line's start does not."""

    def get_help_record(self, ctx: click.Context):
        from .extract.family_listing import backbone_help

        own = self.help  # the option is shared by every invocation in a process: put its own help back
        self.help = backbone_help()
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = own


# Fields whose option needs more than MakeOption; every other field's option is a MakeOption.
OPTION_CLASSES: dict[str, type[MakeOption]] = {"backbone": BackboneOption}


def make_option(*decls: str, make: str, help: str, **kw):
    """A command's own option (not a config field), with its Make variable: `(VAR=)` ends its help."""
    kw.setdefault("show_default", "default" in kw and kw["default"] not in (None, "", 0, False))
    return click.option(
        *decls, cls=MakeOption, make_var=make, help=f"{help} ({make}{'=1' if kw.get('is_flag') else '='})", **kw
    )


def config_option(cls: type, name: str, **kw):
    """The click option of field `name` of the config dataclass `cls`: its help, Make variable,
    default (or the words that stand for it) and choices are the field's (pipeline.config.option),
    written once there; `help` replaces the field's where a command gives the option another
    meaning (zeroshot's --features names one set). A tuple field (--devices) is typed as one
    comma-separated string."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = field.metadata
    make = meta.get("make", name.upper())
    switch = "--" + meta.get("name", name).replace("_", "-")
    decls = [f"{switch}/{meta['flag']}" if meta.get("flag") else switch, name]
    annotation = str(field.type)  # a string: the configs' modules postpone annotations
    if annotation == "bool":
        kw |= {"is_flag": True} if not meta.get("flag") else {}
        make_help = f"{make}=1"
    else:
        make_help = f"{make}="
        kw["type"] = click.Choice(meta["choices"]) if "choices" in meta else option_type(annotation)
    text = kw.pop("help", None) or meta["help"]
    default = "" if isinstance(field.default, tuple) else field.default
    shown = meta.get("shown") or (default not in (None, "") and (annotation != "bool" or bool(meta.get("flag"))))
    return click.option(
        *decls,
        cls=OPTION_CLASSES.get(name, MakeOption),
        make_var=make,
        default=default,
        show_default=shown,
        help=f"{text} ({make_help})",
        **kw,
    )


class CountOrAll(click.ParamType):
    """A whole number, or the word `all` (FRAMES=all: a dense set)."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == FRAMES_ALL:
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor {FRAMES_ALL!r}", param, ctx)


def option_type(annotation: str):
    """The click type of a config field from its annotation (the dataclasses' annotations are strings)."""
    if annotation == "int | str":
        return CountOrAll()
    if "Path" in annotation:
        return click.Path(path_type=Path)
    if annotation.startswith("int"):
        return int
    if annotation.startswith("float"):
        return float
    return str


def config_options(cls: type, *names: str):
    """A decorator adding the options of `cls`'s fields `names`, in that order."""

    def decorate(fn):
        for name in reversed(names):
            fn = config_option(cls, name)(fn)
        return fn

    return decorate


# Every field of ExtractConfig but retry_failures (features only), in --help's order.
EXTRACT_OPTIONS = tuple(f.name for f in dataclasses.fields(ExtractConfig) if f.name != "retry_failures")
# Every field of TrainConfig, in --help's order.
TRAIN_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Every field of LocalizeConfig, in --help's order.
LOCALIZE_OPTIONS = tuple(f.name for f in dataclasses.fields(LocalizeConfig))


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
@config_options(ExtractConfig, *EXTRACT_OPTIONS, "retry_failures")
@user_errors_as_messages
@on_interrupt(STAGE_ONE_INTERRUPTED)
def features(**kw) -> None:
    """Stage one: decode, embed with the backbone and store (N, T, D) float16 shards."""
    from stages.extract import extract_features

    cfg = make_extract_config(**kw)
    store.root_of(cfg.store_root).check()  # a bucket that cannot be used stops now, before any model is built
    extract_features(cfg)


@main.command()
@config_options(BenchConfig, *(f.name for f in dataclasses.fields(BenchConfig)))
@user_errors_as_messages
def bench(**kw) -> None:
    """Stage one (BACKBONE=) against every decoder alone and the seed method; stage two's 50 epochs. Writes bench/results.json."""
    from stages.bench import run_bench

    run_bench(BenchConfig(**kw))


# ================================================================ stage two: train, evaluate, compare, predict
@main.command("train")
@config_options(TrainConfig, *TRAIN_OPTIONS)
@user_errors_as_messages
@on_interrupt(STAGE_TWO_INTERRUPTED)
def train_command(**kw) -> None:
    """Stage two: train a temporal head on a feature set; write metrics, plots and the checkpoint."""
    from stages.train import train

    train(TrainConfig(**kw))


RUN_OPTION = make_option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(path_type=Path),
    make="RUN",
    help="Run directory `train` (or `localize`) printed.",
)


@main.command("evaluate")
@RUN_OPTION
@config_options(TrainConfig, "device")
@missing_files_as_messages
def evaluate_command(run_dir: Path, device: str) -> None:
    """Re-evaluate a run's checkpoint(s) on its test split (a localization run: its validation videos); rewrite its reports."""
    from stages.localize import evaluate_run as rescore
    from stages.localize import is_localization_run

    if is_localization_run(run_dir):
        rescore(run_dir, device)
        return
    from stages.train import evaluate_run

    evaluate_run(run_dir, device)


@main.command("compare")
@config_options(TrainConfig, *TRAIN_OPTIONS)
@user_errors_as_messages
@on_interrupt(f"Heads trained so far keep their run directories. {STAGE_TWO_INTERRUPTED}")
def compare_command(**kw) -> None:
    """Train every head on the same split and data; print and write the table."""
    from stages.train.compare import compare  # the function: `stages.train.compare` is also its module

    compare(TrainConfig(**kw))


@main.command("predict")
@click.argument("video", type=click.Path(path_type=Path))
@RUN_OPTION
@make_option("--top", type=int, default=5, make="TOP", help="How many classes to print (a classification run).")
@config_options(TrainConfig, "device")
@missing_files_as_messages
def predict_command(video: Path, run_dir: Path, top: int, device: str) -> None:
    """Stage one on one video file with the run's extraction settings, then the top classes (a localization
    run: the segments it finds, with their times)."""
    from stages.predict import predict

    predict(video, run_dir, top, device)


@main.command("zeroshot")
@config_option(
    TrainConfig,
    "features",
    help="The OpenCLIP feature set: id, unique prefix or directory (`store list` shows each set's backbone).",
)
@config_options(TrainConfig, "dataset", "data_dir", "name", "features_root", "split")
@config_option(TrainConfig, "seed", help="Seeds the test part carved by group where the dataset has none.")
@config_options(TrainConfig, "test_fraction")
@make_option(
    "--templates",
    type=click.Choice(list(TEMPLATE_SETS)),
    default=next(iter(TEMPLATE_SETS)),
    make="TEMPLATES",
    help="CLIP's prompt templates for UCF101 (48) or Kinetics-700 (28).",
)
@config_option(
    TrainConfig,
    "out",
    help="The run directory (<model> is zeroshot): config, metrics, predictions, the confusion matrix; "
    "a failed run leaves a FAILED file there.",
)
@config_options(TrainConfig, "device")
@user_errors_as_messages
def zeroshot_command(templates: str, **kw) -> None:
    """Classify an OpenCLIP set's test videos with its checkpoint's text tower, no training; write a run's reports."""
    from stages.zeroshot import zeroshot

    zeroshot(TrainConfig(**kw), templates)


@main.command("localize")
@config_options(LocalizeConfig, *LOCALIZE_OPTIONS)
@missing_files_as_messages
@on_interrupt(STAGE_TWO_INTERRUPTED)
def localize_command(**kw) -> None:
    """Temporal action localization: train on a dense set's training videos, score its validation videos
    (mAP at tIoU 0.3-0.7, ActivityNet's 0.5:0.95); with neither FEATURES= nor ANNOTATIONS=, on the
    generated untrimmed sample."""
    cfg = LocalizeConfig(**kw)
    if not cfg.features and not cfg.annotations:
        from stages.localize_sample import localize_sample

        localize_sample(cfg)
        return
    from stages.localize import localize

    localize(cfg)


@main.group("annotations")
def annotations_group() -> None:
    """Annotation files converted to ActivityNet's JSON, which `localize` reads."""


@annotations_group.command("thumos14")
@make_option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(path_type=Path),
    make="DIR",
    help="THUMOS14's annotation folder: <Class>_val.txt and <Class>_test.txt, lines 'video_name start end'.",
)
@make_option("--out", "out", required=True, type=click.Path(path_type=Path), make="OUT", help="The JSON to write.")
@user_errors_as_messages
def annotations_thumos14(folder: Path, out: Path) -> None:
    """THUMOS14's per-class files as one ActivityNet JSON, which `localize` reads: its val videos in
    subset training, its test videos in validation (scored)."""
    from pipeline.files import atomic_write_json
    from stages.localize import thumos14_database

    database, notes = thumos14_database(folder)
    for note in notes:
        console.say(f"note: {note}")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, database)
    entries = database["database"]
    subsets = {s: sum(e["subset"] == s for e in entries.values()) for s in ("training", "validation")}
    console.result(
        f"{out}: {len(entries)} videos ({subsets['training']} training, {subsets['validation']} validation), "
        f"{sum(len(e['annotations']) for e in entries.values())} segments, "
        f"{len({a['label'] for e in entries.values() for a in e['annotations']})} classes"
    )


# ================================================================ end of stage two


@main.command("export")
@config_options(ExportConfig, *(f.name for f in dataclasses.fields(ExportConfig)))
@user_errors_as_messages
@on_interrupt(
    "Every array written so far is whole under its final name; the index is written last. Run the same "
    "command again to complete the export."
)
def export_command(**kw) -> None:
    """A feature set as one float32 (T_i, D) .npy per video plus a JSON index (FORMAT=npy|actionformer)."""
    from stages.export import export

    export(ExportConfig(**kw))


@main.command()
@config_options(ExtractConfig, *EXTRACT_OPTIONS)
@config_options(TrainConfig, "epochs")
@user_errors_as_messages
@on_interrupt(f"Stage one: {STAGE_ONE_INTERRUPTED} Stage two: {STAGE_TWO_INTERRUPTED}")
def demo(epochs: int, **kw) -> None:
    """The main job end to end on the embedded sample: stage one, stage two, a prediction."""
    from stages.demo import run_demo

    cfg = make_extract_config(**kw)
    store.root_of(cfg.store_root).check()
    run_demo(cfg, epochs=epochs)


@main.command("backbones")
@make_option(
    "--markdown",
    make="MARKDOWN",
    type=click.Choice(["readme", "extraction", "architecture"]),
    help="Print instead the family table of that document (README.md, docs/extraction.md, docs/architecture.md), "
    "in Markdown.",
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
    return config_option(TrainConfig, "features_root")(fn)


def selected_sets(features_root: Path | None, ref: str | None) -> list[Path]:
    """The set REF names, or every set under the root when there is no REF."""
    root = store_root(features_root)
    return [store.find_feature_set(ref, root)] if ref else list(store.feature_sets(root))


@store_group.command("list")
@store_root_option
@make_option("--json", "as_json", is_flag=True, make="JSON", help="One JSON object per feature set, for scripts.")
@user_errors_as_messages
def store_list(features_root: Path | None, as_json: bool) -> None:
    """Every feature set under the store root, one line each."""
    records = store.list_sets(store_root(features_root))
    if as_json:
        for r in records:
            console.result(json.dumps(r))
        return
    if not records:
        console.result(f"no feature sets under {store.display(store_root(features_root))}")
        return
    console.result(store.table(records))
    console.result(
        f"\n{len(records)} feature set(s) under {store.display(store_root(features_root))}; `store info ID` for one of them"
    )


@store_group.command("info")
@click.argument("ref", required=False)
@store_root_option
@user_errors_as_messages
def store_info(ref: str | None, features_root: Path | None) -> None:
    """Full extraction config and split sizes of one feature set (the only one if no REF)."""
    console.result(store.describe(store.the_set(store_root(features_root), ref)))


@store_group.command("verify")
@click.argument("ref", required=False)
@store_root_option
@make_option(
    "--repair",
    is_flag=True,
    make="REPAIR",
    help="Drop bad shards from the manifest (and disk) so the next run recomputes only them.",
)
@user_errors_as_messages
def store_verify(ref: str | None, features_root: Path | None, repair: bool) -> None:
    """Recompute checksums; exit 1 if any shard is corrupt or missing and not repaired (all sets if no REF)."""
    sets = selected_sets(features_root, ref)
    if not sets:
        console.result(f"no feature sets under {store.display(store_root(features_root))}")
    checks = []
    for d in sets:
        checks.append(store.check_set(d, repair))
        console.result("\n".join(checks[-1].lines()))
    advice = store.verify_advice(checks, repair)
    if advice:
        console.result(advice)
    sys.exit(1 if any(c.bad for c in checks) else 0)


@store_group.command("gc")
@click.argument("ref", required=False)
@store_root_option
@make_option("--dry-run", is_flag=True, make="DRY_RUN", help="Only list what would be removed.")
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
            console.result(
                f"{'would remove' if dry_run else 'removed'} {store.display(path)} ({store.human_bytes(size)})"
            )
            total, files = total + size, files + 1
    console.result(
        f"{'would free' if dry_run else 'freed'} {store.human_bytes(total)} in {files} file(s) of {len(sets)} feature set(s)"
    )


def copy_between(ref: str, source_root: Path, dest_root: Path) -> None:
    """`store push` and `store pull`: the set REF names under `source_root`, copied to `dest_root`."""
    src = store.find_feature_set(ref, source_root)
    console.say(f"copying {store.display(src)} to {store.display(dest_root)} (shards first, the manifest last)")
    done = store.copy_set(src, dest_root, progress=lambda name: console.say(f"  {name}"))
    console.result(
        f"{store.display(done.set_dir)}: {done.sent} shard(s) sent ({store.human_bytes(done.bytes)}), "
        f"{done.present} already there, every one verified on arrival"
    )


@store_group.command("push")
@click.argument("ref")
@store_root_option
@make_option(
    "--to",
    "to",
    required=True,
    type=click.Path(path_type=Path),
    make="TO",
    help="The root to copy the set to: a directory or s3://bucket/prefix.",
)
@user_errors_as_messages
def store_push(ref: str, features_root: Path | None, to: Path) -> None:
    """Copy a feature set from the store root to another root, verified; safe to rerun after an interruption."""
    copy_between(ref, store_root(features_root), to)


@store_group.command("pull")
@click.argument("ref")
@store_root_option
@make_option(
    "--from",
    "source",
    required=True,
    type=click.Path(path_type=Path),
    make="FROM",
    help="The root to copy the set from: a directory or s3://bucket/prefix.",
)
@user_errors_as_messages
def store_pull(ref: str, features_root: Path | None, source: Path) -> None:
    """Copy a feature set from another root into the store root, verified; safe to rerun after an interruption."""
    copy_between(ref, source, store_root(features_root))


if __name__ == "__main__":
    main()
