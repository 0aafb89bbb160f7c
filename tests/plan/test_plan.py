"""The plan tool with TorchRec's real planner: the plan it prints is the plan training applies
(2 gloo ranks), JSON round trip, constraints, infeasible configs, compare, plan files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from multiprocess import run_multiprocess

from recsys_kdef.builders.model import build_train_module
from recsys_kdef.config import ConfigError
from recsys_kdef.data import Schema
from recsys_kdef.data.stats import estimate_field_stats
from recsys_kdef.distributed.sharding import shard_model
from recsys_kdef.plan.__main__ import load, main, make_plan, parser
from recsys_kdef.plan.summary import PlanSummary


def base_args(path) -> list[str]:
    return [
        "--data",
        str(path),
        "--model.num_students",
        "2",
        "--model.embedding_dim",
        "4",
        "--model.tower.hidden_units",
        "[8]",
        "--data.batch_size",
        "64",
    ]


def plan_for(path, *extra: str, world: str = "1x2") -> PlanSummary:
    args, overrides = parser().parse_known_args([*base_args(path), *extra])
    return make_plan(load(args, overrides, None), world, args.device)


def placements(plan) -> dict[str, tuple]:
    """{module/table: (type, kernel, ranks, shard offsets and sizes)} of a TorchRec ShardingPlan."""
    out = {}
    for module, module_plan in plan.plan.items():
        for name, p in module_plan.items():
            shards = (
                []
                if p.sharding_spec is None
                else [
                    (tuple(s.shard_offsets), tuple(s.shard_sizes)) for s in p.sharding_spec.shards
                ]
            )
            out[f"{module}/{name}"] = (p.sharding_type, p.compute_kernel, tuple(p.ranks), shards)
    return out


def test_json_round_trip_gives_the_same_plan(tiny_dataset, tmp_path):
    summary = plan_for(tiny_dataset)
    summary.save(tmp_path / "plan.json")
    loaded = PlanSummary.load(tmp_path / "plan.json")
    assert loaded.to_json() == summary.to_json()
    assert placements(loaded.to_sharding_plan()) == placements(summary.to_sharding_plan())
    # per-rank totals are the sums of the tables' shards
    for r in loaded.ranks:
        shards = [s for t in loaded.tables for s in t.shards if s.rank == r.rank]
        assert r.ddr_used == sum(s.ddr_bytes for s in shards) > 0
        assert r.cost_ms == pytest.approx(sum(s.cost_ms for s in shards))


def test_pooling_factors_come_from_the_data(tiny_dataset):
    schema = Schema.load(tiny_dataset)
    stats = estimate_field_stats(tiny_dataset, schema, max_row_groups=100)
    multi = next(f.name for f in schema.sparse if f.multi_valued)
    tables = [pq.read_table(p) for p in sorted((tiny_dataset / "train").glob("*.parquet"))]
    lengths = np.concatenate([[len(x or []) for x in t.column(multi).to_pylist()] for t in tables])
    assert stats[multi].pooling_factor == pytest.approx(lengths.mean())
    assert stats[multi].pooling_factor > 1.5
    summary = plan_for(tiny_dataset, "--planner.stats_row_groups", "100")
    planned = {t.name: t.pooling_factor for t in summary.tables}
    assert planned[f"s1__{multi}"] == pytest.approx(stats[multi].pooling_factor)


def test_a_sequences_positions_are_planned_at_the_share_of_rows_that_reach_them(tmp_path):
    from recsys_kdef.config import SyntheticConfig
    from recsys_kdef.data.synthetic import generate

    path = tmp_path / "seq"
    generate(SyntheticConfig(rows=3000, row_group_size=1000, sequence_len=6, seed=3), path)
    schema = Schema.load(path)
    seq = schema.sequences[0]
    stats = estimate_field_stats(path, schema, max_row_groups=100)
    tables = [pq.read_table(p) for p in sorted((path / "train").glob("*.parquet"))]
    kept = np.concatenate(
        [np.minimum([len(x or []) for x in t.column(seq.name).to_pylist()], 6) for t in tables]
    )  # the reader keeps the last 6 ids
    share = [float((kept > i).mean()) for i in range(6)]
    assert [stats[f"{seq.name}#{i}"].pooling_factor for i in range(6)] == pytest.approx(share)
    assert share[0] == 1.0 > share[-1] > 0  # every row has one id, not all have six
    # the target's table reads its own id and every position: 1 + sum of the shares, not 7
    planned = {t.name: t.pooling_factor for t in plan_for(path).tables}
    assert planned[f"s0__{seq.sequence_of}"] == pytest.approx(1 + sum(share))


def test_constraints_by_field_glob_and_table_are_honoured(tiny_dataset, tmp_path):
    field = Schema.load(tiny_dataset).sparse_names[1]
    path = tmp_path / "constraints.yaml"
    path.write_text(
        f"'s*__{field}':\n  sharding_types: [data_parallel]\n"
        f"{field}:\n  sharding_types: [column_wise]\n  min_partition: 2\n"
        f"s1__{field}:\n  min_partition: 4\n"
    )
    summary = plan_for(tiny_dataset, "--constraints", str(path))
    by_name = {t.name: t for t in summary.tables}
    # field beats glob; the table entry overrides min_partition only
    assert by_name[f"s0__{field}"].sharding_type == "column_wise"
    widths = [s.sizes[1] for s in by_name[f"s0__{field}"].shards]
    assert sum(widths) == 4 and min(widths) >= 2
    assert by_name[f"s1__{field}"].sharding_type == "column_wise"
    assert [s.sizes[1] for s in by_name[f"s1__{field}"].shards] == [4]
    assert all(t.sharding_type != "column_wise" for t in summary.tables if field not in t.name)
    rejected = {(r.table.split("/")[-1], r.sharding_type) for r in summary.rejected}
    assert (f"s0__{field}", "table_wise") in rejected


@pytest.mark.parametrize(
    "entry, message",
    [
        ("no_such_field:\n  sharding_types: [table_wise]\n", "'no_such_field' matches no table"),
        ("'*':\n  ranks: [1]\n", "cannot pin tables to ranks"),
        ("'*':\n  sharding: [table_wise]\n", "unknown config key"),
        ("'*':\n  sharding_types: [row_wise]\n", "need CUDA"),
    ],
)
def test_bad_constraints_name_the_file_and_key(tiny_dataset, tmp_path, entry, message):
    path = tmp_path / "c.yaml"
    path.write_text(entry)
    with pytest.raises(ConfigError, match=message) as e:
        plan_for(tiny_dataset, "--constraints", str(path))
    assert str(path) in str(e.value)


def test_an_infeasible_config_errors_with_the_numbers(tiny_dataset, capsys):
    with pytest.raises(SystemExit) as e:
        main([*base_args(tiny_dataset), "--planner.hbm_cap_gb", "0.00002"])
    message = str(e.value)
    assert message.startswith("error: no sharding plan fits 2 ranks of cpu")
    assert "needed:" in message and "available:" in message and "GB DDR per rank" in message
    assert "more ranks: about" in message and "column_wise" in message
    assert "Traceback" not in message


def test_compare_shows_the_table_a_constraint_moved(tiny_dataset, tmp_path, capsys):
    field = Schema.load(tiny_dataset).sparse_names[0]
    (tmp_path / "a.yaml").write_text("{}\n")
    (tmp_path / "c.yaml").write_text(f"s0__{field}:\n  sharding_types: [column_wise]\n")
    (tmp_path / "b.yaml").write_text(f"planner:\n  constraints: {tmp_path / 'c.yaml'}\n")
    main(
        [
            *base_args(tiny_dataset),
            "--config",
            str(tmp_path / "a.yaml"),
            "--compare",
            str(tmp_path / "b.yaml"),
        ]
    )
    out = capsys.readouterr().out
    moved = [line for line in out.splitlines() if line.startswith(f"s0__{field} ")]
    assert len(moved) == 1 and "table_wise @" in moved[0] and "column_wise @" in moved[0]
    main([*base_args(tiny_dataset), "--world", "1x2", "--compare", "1x4"])
    out = capsys.readouterr().out
    assert "Moved or resharded tables: 0" not in out
    assert "\n3 " in out  # rank 3 exists only in the 4-rank plan


def test_a_plan_file_that_does_not_fit_stops_with_the_mismatch(tiny_dataset, tmp_path):
    summary = plan_for(tiny_dataset, world="1x4")
    tables = {t.key: (t.rows, t.dim) for t in summary.tables}
    with pytest.raises(ConfigError, match="planned for 4 ranks, this job has 2"):
        summary.check_fits("p.json", 2, "cpu", tables)
    with pytest.raises(ConfigError, match="planned for cpu devices, this job runs on cuda"):
        summary.check_fits("p.json", 4, "cuda", tables)
    fewer = dict(list(tables.items())[1:])
    with pytest.raises(ConfigError, match="missing from the plan \\[\\], not in the model"):
        summary.check_fits("p.json", 4, "cpu", fewer)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="is not a plan written by"):
        PlanSummary.load(tmp_path / "bad.json")


def shards_on(summary: PlanSummary, rank: int) -> dict[str, list[tuple]]:
    """{table: sorted shard offsets} of the shards `summary` puts on `rank`."""
    out = {
        t.name: sorted(tuple(s.offsets) for s in t.shards if s.rank == rank) for t in summary.tables
    }
    return {k: v for k, v in out.items() if v}


def _train_with_and_without_plan_file(ctx, path, plan_file):
    from recsys_kdef.config import load_config

    results = []
    for extra in ([], ["--planner.plan_file", plan_file]):
        cfg = load_config(
            [
                *base_args(path)[2:],
                "--data.path",
                str(path),
                "--planner.stats_row_groups",
                "8",
                *extra,
            ]
        )
        schema = Schema.load(path)
        module, _ = build_train_module(cfg, schema)
        stats = estimate_field_stats(path, schema, cfg.planner.stats_row_groups)
        dmp, plan = shard_model(module, ctx, cfg.planner, cfg.train, cfg.data.batch_size, stats)
        held = {
            name.split(".")[-2]: sorted(tuple(s.metadata.shard_offsets) for s in v.local_shards())
            for name, v in dmp.state_dict().items()
            if ".embedding_bags." in name and hasattr(v, "local_shards") and v.local_shards()
        }
        results.append((placements(plan), held))
    return results


def test_the_plan_the_tool_prints_is_the_plan_training_applies(tiny_dataset, tmp_path, capsys):
    main([*base_args(tiny_dataset), "--world", "1x2", "--json", str(tmp_path / "plan.json")])
    printed = capsys.readouterr().out
    tool = PlanSummary.load(tmp_path / "plan.json")
    # pin one table to the other rank by editing the file (TorchRec has no rank constraint)
    edited = tool.to_json()
    table = next(t for t in edited["tables"] if t["sharding_type"] == "table_wise")
    new_rank = 1 - table["shards"][0]["rank"]
    table["shards"][0]["rank"] = new_rank
    table["ranks"] = [new_rank]
    (tmp_path / "pinned.json").write_text(json.dumps(edited))
    pinned = PlanSummary.from_json(edited)

    per_rank = run_multiprocess(
        _train_with_and_without_plan_file,
        path=tiny_dataset,
        plan_file=str(tmp_path / "pinned.json"),
    )
    for rank, ((planned, held), (from_file, held_file)) in enumerate(per_rank):
        assert planned == placements(tool.to_sharding_plan())  # training planned what was printed
        assert held == shards_on(tool, rank)
        assert from_file == placements(pinned.to_sharding_plan())  # and applies a saved plan
        assert held_file == shards_on(pinned, rank)
        assert (table["name"] in held_file) == (rank == new_rank)
    for t in tool.tables:
        assert f"{t.name} " in printed and t.sharding_type in printed


def test_planning_needs_the_schema_and_says_what_to_pass(tmp_path):
    with pytest.raises(SystemExit) as e:
        main([*base_args(tmp_path / "nowhere")])
    message = str(e.value)
    assert str(tmp_path / "nowhere" / "schema.json") in message
    assert (
        "pass --data DIR" in message and "schema.json to plan from the schema file alone" in message
    )


def test_a_schema_file_alone_plans_like_its_dataset_without_pooling_data(tiny_dataset, tmp_path):
    alone = tmp_path / "only" / "schema.json"
    alone.parent.mkdir()
    alone.write_text((tiny_dataset / "schema.json").read_text())
    from_file = plan_for(alone, "--planner.stats_row_groups", "0")
    from_dir = plan_for(tiny_dataset, "--planner.stats_row_groups", "0")
    assert [(t.key, t.sharding_type, t.ranks) for t in from_file.tables] == [
        (t.key, t.sharding_type, t.ranks) for t in from_dir.tables
    ]


def test_identical_ranks_print_as_one_row_and_the_figure_is_written(tiny_dataset, tmp_path, capsys):
    from recsys_kdef.plan.figure import rank_series
    from recsys_kdef.plan.text import collapse_ranks

    rows = [["0", "a"], ["1", "a"], ["2", "b"], ["3", "a"], ["4", "a"], ["5", "a"]]
    assert collapse_ranks(rows) == [["0-1", "a"], ["2", "b"], ["3-5", "a"]]
    figure = tmp_path / "ranks.png"
    constrained = ["--planner.sharding_types", "[data_parallel]", "--figure", str(figure)]
    main([*base_args(tiny_dataset), "--world", "2x4", *constrained])
    out = capsys.readouterr().out
    per_rank = out.split("Per rank")[1].split("imbalance")[0].strip().splitlines()
    assert len(per_rank) == 2 and per_rank[1].startswith("0-7 ")  # header + one row, not 8
    assert figure.stat().st_size > 1000 and f"per-rank figure: {figure}" in out
    summary = plan_for(tiny_dataset, "--planner.sharding_types", "[data_parallel]", world="2x4")
    series = rank_series(summary)
    assert len(series["used_gb"]) == 8 and len(set(series["used_gb"])) == 1
    assert all(r > 0 for r in series["reserved_gb"])  # drawn under the tables


def test_the_rank_figure_labels_at_most_8_ranks_a_panel(monkeypatch, tmp_path):
    import recsys_kdef.plan.figure as figure
    from recsys_kdef.plan.summary import RankInfo

    seen = {}
    monkeypatch.setattr(figure, "save_figure", lambda fig, axes, path: seen.update(axes=axes))

    class Plan:  # what plot_ranks reads of a PlanSummary: 16 ranks of a 2x8 job
        compute_device, device, batch_size = "cuda", "h100", 2048
        ranks = [RankInfo(r, 80 << 30, 0, 12 << 30, 0, 7 << 20, 0, 0.1, 44) for r in range(16)]

    figure.plot_ranks(Plan(), tmp_path / "ranks.png")
    for ax in seen["axes"]:
        assert [int(t) for t in ax.get_xticks()] == [0, 2, 4, 6, 8, 10, 12, 14]
