"""`make compare`: every head trained on the same split and the same data, in one table."""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline import console
from pipeline.config import TrainConfig
from pipeline.devices import resolve_device, training_precision
from pipeline.files import atomic_write_json

from .evaluate import HEADLINE
from .models import HEADS
from .runs import default_out
from .trainer import load_data, train


COMPARE_COLUMNS = ("model", "params", "train_s", "top1", "top5", "mean_class_acc")


def format_table(rows: list[dict], columns: tuple[str, ...] = COMPARE_COLUMNS) -> str:
    """A plain-text table: right-aligned numbers, one row per model."""

    def cell(column: str, v) -> str:
        if column in HEADLINE:
            return f"{v:.4f}"  # fractions
        if isinstance(v, float):
            return f"{v:.1f}"  # seconds
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [[cell(c, r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(columns), "  ".join("-" * w for w in widths), *map(line, cells)])


def compare(cfg: TrainConfig, models: tuple[str, ...] | None = None) -> list[dict]:
    """Train every head on the same split(s) and data; print and write the table.

    Writes compare.json, compare.csv and compare.txt into cfg.out (default
    runs/<time>-compare-split<k>/), one run directory per head inside it. With SPLIT=all
    the metrics are means over the splits and train_s the total.
    """
    out = Path(cfg.out) if cfg.out else default_out("compare", cfg.split)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(cfg.device)
    data = load_data(cfg, dev, training_precision(cfg.precision, dev)[1])  # read once, shared by every head
    rows = []
    for name in models or HEADS:
        result = train(cfg.replace(model=name, out=out / name), data=data)
        rows.append(
            {"model": name, "params": result.runs[0].params, "train_s": sum(r.train_seconds for r in result.runs)}
            | result.mean
            | {"run_dir": str(result.run_dir)}
        )
    table = format_table(rows)
    console.result(f"\n{table}\n")
    (out / "compare.txt").write_text(table + "\n")
    atomic_write_json(out / "compare.json", {"split": cfg.split, "rows": rows, "config": cfg.to_json()})
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*COMPARE_COLUMNS, "run_dir"])
        w.writeheader()
        w.writerows(rows)
    console.say(f"compare table: {out / 'compare.txt'}")
    return rows
