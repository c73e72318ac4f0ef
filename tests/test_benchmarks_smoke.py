"""`mdplugin bench speed --quick` runs end to end on the fixture model and writes well-formed results.

A smoke test of the pipeline, not a measurement: timings here are never asserted beyond being positive.
"""

from __future__ import annotations

import json
import math

from click.testing import CliRunner
from conftest import FIXTURES

from mdplugin.cli.main import main

ENGINES = "raw,openmm-cpu,lammps-1,mace"  # the others run the same code paths


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_speed_quick_writes_json_markdown_and_plot(tmp_path):
    arguments = ["bench", "speed", "--quick", "--model", str(FIXTURES / "tiny-float32.pt"), "--sizes", "9,30"]
    arguments += ["--repeats", "2", "--engines", ENGINES, "-o", str(tmp_path)]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.md").read_text().startswith("# Speed")
    assert (tmp_path / "speed.png").stat().st_size > 0

    assert {"machine", "model", "settings", "matmul_gflops", "mace", "skipped", "rows", "scaling"} <= set(results)
    assert {"cpu", "logical_cores", "torch_threads", "versions", "date"} <= set(results["machine"])
    assert positive(results["matmul_gflops"])
    assert [row["target_atoms"] for row in results["rows"]] == [9, 30]
    for row in results["rows"]:
        assert positive(row["atoms"]) and not row["errors"], row["errors"]
        for name in ENGINES.split(","):
            if name in results["skipped"]:  # e.g. LAMMPS when the plugin is not built: the reason is recorded
                assert results["skipped"][name]
                continue
            entry = row["engines"][name]
            assert all(positive(entry[key]) for key in ("ms_per_step", "steps_per_s", "ns_per_day", "relative_to_raw"))
        assert positive(row["flops"]["gflop"]) and positive(row["flops"]["efficiency"])
        assert positive(row["memory"]["peak_rss_mb"])
    assert results["scaling"]["raw"]["exponent_all"] is not None
