"""`make compare`: every head trained on the same split and the same data, in one table.

With several modalities, every head is trained on each modality alone and on all of them
fused, and the table sets their test top-1 side by side: one row per head.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from pipeline import console
from pipeline.devices import resolve_device, training_precision
from pipeline.files import atomic_write_json

from .config import TrainConfig
from .evaluate import HEADLINE
from .fusion import ENCODER_HEADS, effective_fusion
from .models import HEADS
from .runs import default_out
from .trainer import LoadedFeatures, TrainResult, load_data, train

COMPARE_COLUMNS: tuple[str, ...] = ("model", "params", "train_s", "top1", "top5", "mean_class_acc")
FUSED = "fused"  # the input name of all modalities together


def format_table(rows: list[dict], columns: tuple[str, ...] = COMPARE_COLUMNS) -> str:
    """A plain-text table: right-aligned numbers, one row per model."""

    def cell(column: str, v: object) -> str:
        if column.endswith(HEADLINE):
            return f"{v:.4f}"  # fractions (top1, rgb_top1, ...)
        if isinstance(v, float):
            return f"{v:.1f}"  # seconds
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[cell(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *map(line, cells)])


def fused_columns(modalities: list[str]) -> tuple[str, ...]:
    """The table's columns with several modalities: top-1 of each input, then the fused run's top-5 and size."""
    return ("model", "fusion", *(f"{m}_top1" for m in [*modalities, FUSED]), f"{FUSED}_top5", "params", "train_s")


def head_row(name: str, result: TrainResult) -> dict:
    """One head's row with one modality: its mean metrics over the split(s) and its run directory."""
    return (
        {"model": name, "params": result.runs[0].params, "train_s": sum(r.train_seconds for r in result.runs)}
        | result.mean
        | {"run_dir": str(result.run_dir)}
    )


def modality_data(
    cfg: TrainConfig, data: LoadedFeatures, name: str, device: torch.device, dtype: torch.dtype
) -> tuple[TrainConfig, LoadedFeatures]:
    """The config and features of input `name`: one modality's set(s) alone, or the joined view (FUSED)."""
    if name == FUSED:
        return cfg, data
    alone = cfg.replace(features=",".join(str(fs.set_dir) for fs in data.view.sets[name]), modalities=())
    return alone, load_data(alone, device, dtype)


def modality_rows(
    cfg: TrainConfig, data: LoadedFeatures, heads: tuple[str, ...], out: Path, device: torch.device, dtype: torch.dtype
) -> list[dict]:
    """Each head on each modality alone, then fused (run directories out/<input>/<head>): one row per head
    with "<input>_top1", "_top5", "_mean_class_acc" and "_run_dir" per input; params of the fused model."""
    rows: dict[str, dict] = {h: {"model": h, "fusion": effective_fusion(h, cfg.fusion), "train_s": 0.0} for h in heads}
    for name in [*data.view.modalities, FUSED]:
        run_cfg, run_data = modality_data(cfg, data, name, device, dtype)
        for h in heads:
            result = train(run_cfg.replace(model=h, out=out / name / h), data=run_data)
            rows[h]["train_s"] += sum(r.train_seconds for r in result.runs)
            rows[h] |= {f"{name}_{k}": v for k, v in result.mean.items()} | {f"{name}_run_dir": str(result.run_dir)}
            if name == FUSED:
                rows[h]["params"] = result.runs[0].params
    return list(rows.values())


def compare(cfg: TrainConfig, models: tuple[str, ...] | None = None) -> list[dict]:
    """Train every head on the same split(s) and data; print and write the table.

    Writes compare.json, compare.csv and compare.txt into cfg.out (default
    runs/<time>-compare-split<k>/), one run directory per head inside it (several
    modalities: one per input and head, <input>/<head>). With SPLIT=all the metrics are
    means over the splits and train_s the total.
    """
    out = Path(cfg.out) if cfg.out else default_out("compare", cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(cfg.device)
    dtype = training_precision(cfg.precision, dev)[1]
    data = load_data(cfg, dev, dtype)  # read once, shared by every head
    heads = tuple(models or HEADS)
    modalities = data.view.modalities
    if len(modalities) == 1:
        rows = [head_row(h, train(cfg.replace(model=h, out=out / h), data=data)) for h in heads]
        columns, fields = COMPARE_COLUMNS, [*COMPARE_COLUMNS, "run_dir"]
    else:
        rows = modality_rows(cfg, data, heads, out, dev, dtype)
        columns = fused_columns(modalities)
        per_input = [f"{i}_{k}" for i in [*modalities, FUSED] for k in (*HEADLINE, "run_dir")]
        fields = ["model", "fusion", *per_input, "params", "train_s"]
        console.say(
            f"compare: test top-1 of each head on {', '.join(modalities)} alone and {'+'.join(modalities)} fused "
            f"(FUSION={cfg.fusion} for {', '.join(ENCODER_HEADS)}; the other heads read the early input)"
        )
    table = format_table(rows, columns)
    console.result(f"\n{table}\n")
    (out / "compare.txt").write_text(table + "\n")
    inputs = modalities if len(modalities) == 1 else [*modalities, FUSED]
    atomic_write_json(
        out / "compare.json", {"split": cfg.split, "inputs": inputs, "rows": rows, "config": cfg.to_json()}
    )
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    console.say(f"compare table: {out / 'compare.txt'}")
    return rows
