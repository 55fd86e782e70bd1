"""Turn a pytest-benchmark JSON result of ``benchmarks/`` into a markdown table and a PNG plot.

    python benchmarks/report.py RESULT.json [--markdown OUT.md] [--png OUT.png]

The table has one row per workload and the providers side by side (time of each, the
tritonobs speedup over torch.ao, its GB/s and fraction of the copy bandwidth measured in the same
run), followed by the performance targets of issue 4 and whether each holds, and, when the run has
them, the end-to-end calibration records (observer time, calibrate's own overhead and the total of
each side). The plot shows tritonobs' speedup over torch.ao and its GB/s against input size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Record = dict[str, Any]

STATISTIC_TEXT = {
    "median": "median of the timed rounds",
    "min": "fastest of the timed rounds (a shared CPU machine: the least disturbed round)",
}


def load_records(path: str | Path) -> tuple[list[Record], dict[str, Any]]:
    """The ``extra_info`` of every benchmark in a pytest-benchmark JSON file, and the run's metadata.

    Returns:
        ``(records, meta)``: one record per benchmark (its ``extra_info`` plus ``name``), and
        ``{"datetime": ..., "machine": ...}`` from the file.
    """
    data = json.loads(Path(path).read_text())
    records = [{**b["extra_info"], "name": b["name"]} for b in data["benchmarks"]]
    meta = {"datetime": data.get("datetime", ""), "machine": data.get("machine_info", {})}
    return records, meta


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def table_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One row per workload (``case``) with each provider's time and tritonobs' figures."""
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(
            r["case"],
            {k: r.get(k, "") for k in ("benchmark", "shape", "numel", "dtype", "data")}
            | {"what": r.get("observer") or r.get("op", ""), "case": r["case"]},
        )
        row[r["provider"]] = r["time_ms"]
        row.setdefault("torch.ao", r["torch_ao_ms"])
        if r["provider"] == "tritonobs":
            # Its torch.ao time was measured beside it (interleaved on CPU): the row's pair.
            row["torch.ao"] = r["torch_ao_ms"]
            row["speedup"] = r["speedup_vs_torch_ao"]
            row["gbps"] = r["gbps"]
            row["copy_fraction"] = r["copy_fraction"]
        if r["provider"] == "torch.compile":
            row["compile_speedup"] = r["speedup_vs_torch_ao"]
    return list(rows.values())


def markdown_table(records: list[Record]) -> str:
    """The results as a markdown table, one row per workload."""
    header = (
        "| benchmark | observer / op | shape | dtype | data | torch.ao ms | tritonobs ms | "
        "speedup | GB/s | % copy BW | torch.compile ms | compile speedup |"
    )
    lines = [header, "|" + "---|" * 12]
    for row in table_rows(records):
        speedup = row.get("speedup")
        compile_speedup = row.get("compile_speedup")
        gbps = row.get("gbps")
        fraction = row.get("copy_fraction")
        lines.append(
            f"| {row['benchmark']} | {row['what']} | {row['shape']} | {row['dtype']} | "
            f"{row['data']} | {_fmt_ms(row.get('torch.ao'))} | {_fmt_ms(row.get('tritonobs'))} | "
            f"{'-' if speedup is None else f'{speedup:.2f}x'} | "
            f"{'-' if gbps is None else f'{gbps:.3g}'} | "
            f"{'-' if fraction is None else f'{100 * fraction:.0f}%'} | "
            f"{_fmt_ms(row.get('torch.compile'))} | "
            f"{'-' if compile_speedup is None else f'{compile_speedup:.2f}x'} |"
        )
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Target:
    """A performance target: every matching tritonobs record must reach ``threshold``.

    Attributes:
        text: the target as stated in issue 4.
        device_type: ``cpu`` or ``cuda``.
        metric: ``speedup_vs_torch_ao`` or ``copy_fraction``.
        threshold: the lowest acceptable value of the metric.
        match: selects the records the target is about.
    """

    text: str
    device_type: str
    metric: str
    threshold: float
    match: Callable[[Record], bool]


def _forward(r: Record) -> bool:
    return r.get("benchmark", "").startswith("forward")


def _minmax_family(r: Record) -> bool:
    return "MinMaxObserver" in r.get("observer", "")


def _heavy_tailed(r: Record) -> bool:
    return r.get("data") in ("student_t", "llm")


TARGETS: list[Target] = [
    Target(
        "CPU: forward >= 1.0x torch.ao, every observer", "cpu", "speedup_vs_torch_ao", 1.0, _forward
    ),
    Target(
        "CPU: forward >= 3x torch.ao for bf16 input (min/max observers: torch.ao copies to fp32)",
        "cpu",
        "speedup_vs_torch_ao",
        3.0,
        lambda r: _forward(r) and _minmax_family(r) and r["dtype"] == "bf16",
    ),
    Target(
        "CPU: per-channel forward on the last axis >= 3x torch.ao",
        "cpu",
        "speedup_vs_torch_ao",
        3.0,
        lambda r: (
            _forward(r) and "PerChannel" in r.get("observer", "") and "ch_axis-1" in r["observer"]
        ),
    ),
    Target(
        "CPU: HistogramObserver calculate_qparams >= 10x torch.ao on heavy-tailed streams",
        "cpu",
        "speedup_vs_torch_ao",
        10.0,
        lambda r: (
            r.get("observer") == "HistogramObserver"
            and r["benchmark"] == "calculate_qparams"
            and _heavy_tailed(r)
        ),
    ),
    Target(
        "CUDA: per-tensor aminmax [8192, 8192] bf16 >= 85% of copy bandwidth",
        "cuda",
        "copy_fraction",
        0.85,
        lambda r: (
            r.get("op") == "tritonobs::aminmax"
            and r["benchmark"].endswith("(minmax)")
            and r["shape"] == "8192x8192"
            and r["dtype"] == "bf16"
        ),
    ),
    Target(
        "CUDA: per-channel aminmax (ch_axis 0 and -1) [8192, 8192] bf16 >= 80% of copy bandwidth",
        "cuda",
        "copy_fraction",
        0.80,
        lambda r: (
            r.get("op") == "tritonobs::aminmax_per_channel"
            and "(minmax," in r["benchmark"]
            and r["shape"] == "8192x8192"
            and r["dtype"] == "bf16"
        ),
    ),
    Target(
        "CUDA: HistogramObserver forward >= 10x torch.ao",
        "cuda",
        "speedup_vs_torch_ao",
        10.0,
        lambda r: r.get("observer") == "HistogramObserver" and _forward(r),
    ),
    Target(
        "CUDA: HistogramObserver calculate_qparams >= 100x torch.ao",
        "cuda",
        "speedup_vs_torch_ao",
        100.0,
        lambda r: (
            r.get("observer") == "HistogramObserver" and r["benchmark"] == "calculate_qparams"
        ),
    ),
]


def evaluate_targets(records: list[Record]) -> list[dict[str, Any]]:
    """Each target's verdict on the tritonobs records of ``records``.

    Returns:
        One dict per target: ``target``, ``status`` (``holds``, ``fails`` or ``not measured``),
        ``count`` (records it covers), ``worst`` (lowest metric value), ``worst_case``,
        ``median`` and ``failing`` (the cases below the threshold).
    """
    verdicts = []
    for target in TARGETS:
        matched = [
            r
            for r in records
            if r["provider"] == "tritonobs"
            and r.get("device_type") == target.device_type
            and target.match(r)
        ]
        verdict: dict[str, Any] = {"target": target.text, "count": len(matched)}
        if not matched:
            verdict["status"] = "not measured"
            verdicts.append(verdict)
            continue
        worst = min(matched, key=lambda r: r[target.metric])
        failing = [r["case"] for r in matched if r[target.metric] < target.threshold]
        verdict |= {
            "status": "fails" if failing else "holds",
            "worst": worst[target.metric],
            "worst_case": worst["case"],
            "median": statistics.median(r[target.metric] for r in matched),
            "metric": target.metric,
            "failing": failing,
        }
        verdicts.append(verdict)
    return verdicts


def _fmt_metric(metric: str, value: float) -> str:
    return f"{100 * value:.0f}%" if metric == "copy_fraction" else f"{value:.2f}x"


def markdown_targets(records: list[Record]) -> str:
    """The targets as a markdown table: status, how many workloads, worst and median value."""
    lines = ["| target | status | workloads | worst (case) | median |", "|---|---|---|---|---|"]
    for v in evaluate_targets(records):
        if v["status"] == "not measured":
            lines.append(f"| {v['target']} | not measured | 0 | - | - |")
            continue
        lines.append(
            f"| {v['target']} | {v['status']} ({len(v['failing'])} below) | {v['count']} | "
            f"{_fmt_metric(v['metric'], v['worst'])} ({v['worst_case']}) | "
            f"{_fmt_metric(v['metric'], v['median'])} |"
        )
    return "\n".join(lines)


def _calibration(r: Record) -> bool:
    return r.get("benchmark", "").startswith("calibrate")


def markdown_calibration(records: list[Record]) -> str:
    """The end-to-end calibration records (``test_bench_calibrate.py``) as a markdown table: each
    side's observer time and calibration total, the speedups, and calibrate's own overhead."""
    lines = [
        "| observer | dtype | torch threads | tritonobs observers ms | torch.ao observers ms | "
        "observers speedup | tritonobs total ms | torch.ao total ms | total speedup | "
        "calibrate overhead ms (tritonobs / torch.ao) |",
        "|" + "---|" * 10,
    ]
    for r in records:
        if not _calibration(r):
            continue
        lines.append(
            f"| {r['observer']} | {r['dtype']} | {r.get('threads') or 'n/a (cuda)'} | "
            f"{_fmt_ms(r['observer_ms'])} | {_fmt_ms(r['torch_ao_observer_ms'])} | "
            f"{r['observer_speedup_vs_torch_ao']:.2f}x | {_fmt_ms(r['time_ms'])} | "
            f"{_fmt_ms(r['torch_ao_ms'])} | {r['speedup_vs_torch_ao']:.2f}x | "
            f"{r['overhead_ms']:.2f} / {r['torch_ao_overhead_ms']:.2f} |"
        )
    return "\n".join(lines)


def markdown_report(records: list[Record], meta: dict[str, Any]) -> str:
    """Heading (device, date, versions, copy bandwidth), the results table and the targets."""
    if not records:
        return "No benchmark results."
    first = records[0]
    return "\n".join(
        [
            f"### {first['device']}, {meta.get('datetime', '')[:16].replace('T', ' ')} UTC",
            "",
            f"torch {first['torch']}, triton {first['triton']}, tritonobs {first['tritonobs']}, "
            f"profile `{first['profile']}`, {first.get('cpu_threads', '-')} torch CPU thread(s), "
            f"measured copy bandwidth {first['copy_gbps']:.1f} GB/s "
            f"(load average at start {first.get('loadavg', '-')}). Times in ms are the "
            f"{STATISTIC_TEXT.get(first.get('statistic', 'median'), first.get('statistic'))}; "
            "speedups are over torch.ao measured in the same run.",
            "",
            markdown_table(records),
            "",
            "#### Targets",
            "",
            markdown_targets(records),
            "",
            *_calibration_section(records),
        ]
    )


def _calibration_section(records: list[Record]) -> list[str]:
    calibration = [r for r in records if _calibration(r)]
    if not calibration:
        return []
    first = calibration[0]
    return [
        "#### End-to-end calibration",
        "",
        f"`calibrate()` of {first['model']} ({first['shape']}: batches x sentences x most "
        f"tokens), one observer per Linear input; each side's "
        f"{'fastest' if first['statistic'] == 'min' else 'median'} of {first['repeats']} timed "
        "run(s), alternating with the other side's after one warm-up run each; speedup = "
        "torch.ao / tritonobs.",
        "",
        markdown_calibration(records),
        "",
    ]


def plot(records: list[Record], path: str | Path) -> None:
    """Write a PNG: tritonobs' speedup over torch.ao and its GB/s against input size.

    Only the workloads whose cost grows with the input (forwards and the ops on a batch) are
    drawn: one line per benchmark and observer/op, solid for bf16 and dashed for fp32, each point
    the geometric mean over the data kinds.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], dict[int, list[Record]]] = {}
    for r in records:
        if r["provider"] != "tritonobs" or "x" not in str(r["shape"]):
            continue
        if r["benchmark"] == "calculate_qparams" or _calibration(r):
            continue
        label = f"{r['benchmark']} {r.get('observer') or r.get('op', '')}"
        series.setdefault((label, r["dtype"]), {}).setdefault(r["numel"], []).append(r)

    def geomean(rs: list[Record], key: str) -> float:
        return math.exp(statistics.fmean(math.log(r[key]) for r in rs))

    first = records[0]
    fig, (ax_speed, ax_bw) = plt.subplots(1, 2, figsize=(16, 11))
    labels = sorted({label for label, _ in series})
    colors = plt.get_cmap("tab20")
    for (label, dtype), by_size in sorted(series.items()):
        sizes = sorted(by_size)
        style = {
            "color": colors(labels.index(label) % 20),
            "linestyle": "-" if dtype == "bf16" else "--",
            "marker": "o",
            "label": f"{label} {dtype}",
        }
        ax_speed.plot(sizes, [geomean(by_size[s], "speedup_vs_torch_ao") for s in sizes], **style)
        ax_bw.plot(sizes, [geomean(by_size[s], "gbps") for s in sizes], **style)
    ax_speed.axhline(1.0, color="black", linewidth=0.8)
    ax_bw.axhline(first["copy_gbps"], color="black", linewidth=0.8, label="copy bandwidth")
    for ax, ylabel in ((ax_speed, "speedup over torch.ao"), (ax_bw, "GB/s")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input elements")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    handles, names = ax_bw.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(
        f"tritonobs vs torch.ao on {first['device']} (torch {first['torch']}, "
        f"profile {first['profile']}); solid bf16, dashed fp32"
    )
    fig.subplots_adjust(bottom=0.3, top=0.94, wspace=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", help="pytest-benchmark JSON (--benchmark-json) of benchmarks/")
    parser.add_argument("--markdown", help="write the report here instead of printing it")
    parser.add_argument("--png", help="write the plot here")
    args = parser.parse_args(argv)
    records, meta = load_records(args.result)
    report = markdown_report(records, meta)
    if args.markdown:
        Path(args.markdown).write_text(report)
    else:
        print(report)
    if args.png:
        plot(records, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
