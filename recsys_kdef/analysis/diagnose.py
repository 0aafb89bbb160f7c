"""Collapse diagnostics of a trained ensemble, from its checkpoint.

* Embeddings: per table (per student and field), the singular values of the rows the data
  uses (a seeded sample when there are more than --max-rows) and their information abundance
  IA = sum(sigma) / max(sigma) (the multi-embedding paper): d for a table that spreads over
  all d dimensions evenly, 1 for a collapsed, rank-one table.
* Towers: the same for every student's weight matrix of every layer.
* Agreement: the correlation of the students' logits on validation rows; students that all
  say the same thing add nothing to their ensemble (KDEF's collapse).

    python -m recsys_kdef.analysis.diagnose --checkpoint runs/demo [--data DIR] [--out DIR]

Writes diagnose.json and PNG figures to --out (default: beside the checkpoint, never inside
it: <run>/diagnose/<checkpoint name>/).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from recsys_kdef.checkpoint.paths import beside_checkpoint, written_line
from recsys_kdef.checkpoint.store import CheckpointError, load_checkpoint, resolve
from recsys_kdef.config import ExperimentConfig
from recsys_kdef.config.loading import from_dict
from recsys_kdef.data.reader import ParquetBatchReader, list_split_files
from recsys_kdef.data.schema import DataError, Schema
from recsys_kdef.figures import integer_axis, save_figure, subplots, ticks_at
from recsys_kdef.io import atomic_path, check_writable
from recsys_kdef.models.ensemble import build_model
from recsys_kdef.models.students import student_groups
from recsys_kdef.models.table_layout import unstack_state_dict

TABLE_PREFIX = "sparse_arch.embedding_bag_collection.embedding_bags."


def information_abundance(sigma: np.ndarray) -> float:
    """sum(sigma) / max(sigma): the effective number of dimensions a matrix spans."""
    top = float(np.max(sigma)) if sigma.size else 0.0
    return float(np.sum(sigma) / top) if top > 0 else 0.0


def singular_values(matrix: torch.Tensor) -> np.ndarray:
    return torch.linalg.svdvals(matrix.double()).numpy()


def used_ids(data: Path, schema: Schema, split: str, max_rows: int) -> dict[str, np.ndarray]:
    """Per sparse field, the ids that occur in (the first max_rows rows of) a split."""
    ids: dict[str, list[np.ndarray]] = {f.name: [] for f in schema.sparse}
    seen = 0
    for path in list_split_files(data, split):
        file = pq.ParquetFile(path)
        for g in range(file.metadata.num_row_groups):
            table = file.read_row_group(g, columns=schema.sparse_names)
            for f in schema.sparse:
                col = table.column(f.name).combine_chunks()
                col = col.flatten() if f.multi_valued else col
                ids[f.name].append(np.unique(col.drop_null().to_numpy()))
            seen += table.num_rows
            if seen >= max_rows:
                break
        if seen >= max_rows:
            break
    return {name: np.unique(np.concatenate(parts)) for name, parts in ids.items()}


def table_spectra(
    state: dict[str, torch.Tensor], used: dict[str, np.ndarray], max_rows: int, seed: int
) -> list[dict]:
    """Singular values and IA of every embedding table, on the rows the data uses."""
    rng = np.random.default_rng(seed)
    out = []
    tables = sorted(k for k in state if k.startswith(TABLE_PREFIX) and k.endswith(".weight"))
    for key in tqdm(tables, desc="tables", unit="table", leave=False):
        name = key[len(TABLE_PREFIX) : -len(".weight")]
        student, _, field = name.rpartition("__")
        rows = used[field]
        if len(rows) > max_rows:
            rows = np.sort(rng.choice(rows, max_rows, replace=False))
        sigma = singular_values(state[key][torch.from_numpy(rows)])
        out.append(
            {
                "table": name,
                "field": field,
                "student": int(student[1:]) if student else None,  # None: shared by all
                "rows_used": int(len(used[field])),
                "rows_in_svd": int(len(rows)),
                "ia": information_abundance(sigma),
                "singular_values": sigma.tolist(),
            }
        )
    return out


def tower_spectra(
    state: dict[str, torch.Tensor], first_student: list[int], archs: list[str] | None = None
) -> list[dict]:
    """IA of each student's weight matrix in every tower layer. Keys are towers.groups.<g>...
    and tensors lead with the group's students, who are students first_student[g], ... of
    the ensemble (`students` of each entry); `label` names the layer for people (`archs`:
    each group's architecture, to tell groups apart)."""
    out = []
    for key, w in sorted(state.items(), key=lambda item: _layer_order(item[0])):
        if key.startswith("towers.groups.") and w.ndim == 3 and min(w.shape[1:]) > 1:
            group = int(key.split(".")[2])
            first = first_student[group]
            iak = [information_abundance(singular_values(w[k])) for k in range(w.shape[0])]
            arch = archs[group] if archs and len(set(archs)) > 1 else None
            out.append({"layer": key[len("towers.") :], "shape": list(w.shape[1:]), "ia": iak,
                        "students": list(range(first, first + len(iak))),
                        "label": layer_label(key, list(w.shape[1:]), arch)})  # fmt: skip
    return out


def _layer_order(key: str) -> list:
    """Sort key of a state key: numeric parts as numbers (layer 10 after layer 9)."""
    return [int(p) if p.isdigit() else p for p in key.split(".")]


def layer_label(key: str, shape: list[int], arch: str | None = None) -> str:
    """'layer 1 (400)' for towers.groups.<g>.weights.0 of shape (in, 400); other matrices
    '<name> <i+1> (<in>x<out>)', e.g. 'cross_weights 2 (16x16)'; `arch` prefixes the
    architecture of a heterogeneous ensemble's group."""
    rest = key.split(".", 3)[3] if key.count(".") >= 3 else key
    if rest.startswith("stacked."):  # a zoo student's parameters, names kept as a/b/c keys
        rest = rest[len("stacked.") :].replace("__", ".")
    parts = [p for p in rest.split(".") if p not in ("weight",)] if "." in rest else [rest]
    index = int(parts[-1]) + 1 if parts and parts[-1].isdigit() else None
    name = ".".join(parts[:-1] if index is not None else parts) or "weight"
    if name == "weights":
        text = f"layer {index} ({shape[-1]})"
    else:
        text = name + (f" {index}" if index is not None else "") + f" ({shape[0]}x{shape[-1]})"
    return f"{arch} {text}" if arch else text


@torch.no_grad()
def agreement(model, reader: ParquetBatchReader, max_rows: int) -> np.ndarray:
    """(K, K) correlation of the students' logits over up to max_rows rows."""
    model.eval()
    logits, rows = [], 0
    for batch in reader:
        if batch.padding:
            continue
        logits.append(model(batch.dense, batch.sparse).logits.numpy())
        rows += len(batch)
        if rows >= max_rows:
            break
    z = np.concatenate(logits)
    return np.corrcoef(z.T) if z.shape[1] > 1 else np.ones((1, 1))


def diagnose(checkpoint: str | Path, data: str | Path | None, split: str, max_rows: int) -> dict:
    ckpt = load_checkpoint(checkpoint)
    cfg = from_dict(ExperimentConfig, ckpt["config"])
    schema = Schema.from_json(ckpt["schema"])
    state = ckpt["state_dict"]  # full weights, assembled from the ranks' shards
    data = Path(data or cfg.data.path)
    used = used_ids(data, schema, "train", max_rows)
    model = build_model(cfg.model, schema, device=torch.device("cpu"))
    model.load_state_dict(state)
    counts = [group.count for group in student_groups(cfg.model)]
    first_student = [sum(counts[:g]) for g in range(len(counts))]
    dims = [g.embedding_dim for g in student_groups(cfg.model) for _ in range(g.count)]
    archs = [group.spec.arch for group in student_groups(cfg.model)]
    reader = ParquetBatchReader(list_split_files(data, split), schema, 4096, training=False)
    corr = agreement(model, reader, max_rows)
    k = corr.shape[0]
    off = corr[~np.eye(k, dtype=bool)]
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_dir": ckpt["path"],
        "students": cfg.model.num_students,
        "embedding_mode": cfg.model.embedding_mode,
        "embedding_dim": cfg.model.embedding_dim,
        "tables": table_spectra(unstack_state_dict(state, dims), used, max_rows, cfg.train.seed),
        "towers": tower_spectra(state, first_student, archs),
        "agreement": {
            "split": split,
            "logit_correlation": corr.tolist(),
            "mean_pairwise": float(off.mean()) if off.size else 1.0,
        },
    }


def plot(result: dict, out: Path) -> list[Path]:
    tables = result["tables"]
    fields = sorted({t["field"] for t in tables})
    students = sorted({t["student"] for t in tables}, key=lambda s: -1 if s is None else s)
    label = {s: "shared" if s is None else f"student {s}" for s in students}
    paths = []

    fig, ax = subplots(max(6.0, 0.6 * len(fields)), 4.0)
    width = 0.8 / len(students)
    for i, s in enumerate(students):
        ia = [
            next(t["ia"] for t in tables if t["field"] == f and t["student"] == s) for f in fields
        ]
        ax.bar(np.arange(len(fields)) + i * width, ia, width, label=label[s])
    ax.axhline(result["embedding_dim"], color="k", ls=":", lw=1, label="embedding dim")
    ax.set_xticks(np.arange(len(fields)) + 0.4 - width / 2, fields, rotation=45, ha="right")
    ax.set(ylabel="information abundance", title="Embedding IA per field and student")
    paths.append(save_figure(fig, ax, out / "embedding_ia.png"))

    fig, ax = subplots()
    for i, (s, (median, low, high)) in enumerate(spectrum_bands(tables).items()):
        x = np.arange(1, len(median) + 1)
        ax.plot(x, median, color=f"C{i % 10}", lw=1.5, label=f"{label[s]} (median)")
        ax.fill_between(x, low, high, color=f"C{i % 10}", alpha=0.2, lw=0)
    integer_axis(ax.xaxis)
    ax.set(yscale="log", xlabel="singular value index", ylabel="sigma / max sigma",
           title=f"Embedding spectra: median and 25-75% over {len(fields)} fields")  # fmt: skip
    paths.append(save_figure(fig, ax, out / "embedding_spectra.png"))

    if result["towers"]:
        fig, ax = subplots()
        # a heterogeneous ensemble's groups have layers of their own: each layer's slot holds
        # the bars of its group's students only, so a big mix does not leave slots mostly empty
        layers = result["towers"]
        width = 0.8 / max(len(lay["students"]) for lay in layers)
        for s in range(result["students"]):
            at = [(i + j * width, lay["ia"][j]) for i, lay in enumerate(layers)
                  for j, who in enumerate(lay["students"]) if who == s]  # fmt: skip
            if at:
                ax.bar([x for x, _ in at], [v for _, v in at], width, color=f"C{s % 10}",
                       label=f"student {s}")  # fmt: skip
        centres = [i + (len(lay["students"]) - 1) * width / 2 for i, lay in enumerate(layers)]
        ax.set_xticks(centres, [lay.get("label", lay["layer"]) for lay in layers], rotation=30,
                      ha="right")  # fmt: skip
        ax.set(ylabel="information abundance", title="Tower layers' IA per student")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars
        paths.append(save_figure(fig, ax, out / "tower_ia.png", legend=False))

    corr = np.array(result["agreement"]["logit_correlation"])
    fig, ax = subplots(4.5, 4.0)
    image = ax.imshow(corr, vmin=min(0.0, corr.min()), vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax)
    ticks_at(ax.xaxis, range(len(corr)))  # one tick per student, none between
    ticks_at(ax.yaxis, range(len(corr)))
    ax.set(xlabel="student", ylabel="student",
           title=f"Logit correlation (mean {result['agreement']['mean_pairwise']:.3f})")  # fmt: skip
    paths.append(save_figure(fig, ax, out / "agreement.png", legend=False))
    return paths


def spectrum_bands(tables: list[dict]) -> dict[int | None, tuple[np.ndarray, ...]]:
    """Per student (None: shared tables): the (median, 25th, 75th percentile) over its fields
    of sigma_i / max sigma at each index i; tables with fewer values leave them out."""
    by_student: dict[int | None, list[np.ndarray]] = {}
    for t in tables:
        sigma = np.asarray(t["singular_values"], dtype=np.float64)
        if sigma.size and sigma.max() > 0:
            by_student.setdefault(t["student"], []).append(sigma / sigma.max())
    out = {}
    for s in sorted(by_student, key=lambda s: -1 if s is None else s):
        spectra = by_student[s]
        padded = np.full((len(spectra), max(len(x) for x in spectra)), np.nan)
        for row, x in zip(padded, spectra, strict=True):
            row[: len(x)] = x
        out[s] = tuple(np.nanpercentile(padded, q, axis=0) for q in (50, 25, 75))
    return out


def format_summary(result: dict) -> str:
    tables = result["tables"]
    students = sorted({t["student"] for t in tables}, key=lambda s: -1 if s is None else s)
    names = ["shared" if s is None else f"s{s}" for s in students]
    lines = ["Embedding information abundance (rows the training split uses)"]
    lines.append(f"{'field':<16}" + "".join(f"{n:>9}" for n in names))
    for field in sorted({t["field"] for t in tables}):
        ia = [
            next(t["ia"] for t in tables if t["field"] == field and t["student"] == s)
            for s in students
        ]
        lines.append(f"{field:<16}" + "".join(f"{v:>9.2f}" for v in ia))
    for layer in result["towers"]:
        who = f"s{layer['students'][0]}-s{layer['students'][-1]}"
        lines.append(
            f"tower {layer.get('label', layer['layer']):<16} ({who})"
            + "".join(f"{v:>9.2f}" for v in layer["ia"])
        )
    lines.append(f"mean pairwise logit correlation: {result['agreement']['mean_pairwise']:.4f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Collapse diagnostics of a trained ensemble.")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run directory (its best checkpoint) or one checkpoint directory",
    )
    parser.add_argument("--data", help="dataset directory (default: the run's data.path)")
    parser.add_argument("--split", default="valid", help="split for the students' agreement")
    parser.add_argument(
        "--max-rows", type=int, default=50_000, help="rows per SVD and per agreement"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for diagnose.json and PNGs (default: beside the checkpoint, "
        "<run>/diagnose/<checkpoint name>/)",
    )
    args = parser.parse_args(argv)
    try:
        out = args.out or beside_checkpoint(resolve(args.checkpoint), "diagnose")
        check_writable(out, "--out")  # before any work
        result = diagnose(args.checkpoint, args.data, args.split, args.max_rows)
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    figures = plot(result, out)
    result["figures"] = [p.name for p in figures]
    with atomic_path(out / "diagnose.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(format_summary(result))
    print(written_line([out / "diagnose.json", *figures]))


if __name__ == "__main__":
    main()
