"""The chaos report writer: the checker's result as report.md and timeline.png for a human to read.

The checker decides; this module only presents. report.md leads with the verdict, then what was
run, what happened (sends, polls, faults and whether the cluster recovered from each) and every
anomaly class with examples, so a failed CI run can be understood from the report alone.
timeline.png puts throughput and failures against the fault windows, which is where a stall
after a fault shows. The plot uses matplotlib's Agg canvas directly (no pyplot state, no display)
so it works headless and in threads.
"""

from __future__ import annotations

import json
import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from distlog.chaos.checker import anomalies_of

EXAMPLES_PER_ANOMALY = 10
TIMELINE_FILE = "timeline.png"
REPORT_FILE = "report.md"
FIGURE_SIZE_IN = (12, 5)
FIGURE_DPI = 100
# One colour per fault kind, so the windows of one kind read as a group across the run.
FAULT_COLOURS = {"kill": "tab:red", "leader-kill": "darkred", "controller-kill": "indianred", "pause": "tab:orange",
                 "partition": "tab:purple", "torn-write": "tab:brown", "corrupt": "tab:pink", "power-loss": "black",
                 "membership": "tab:cyan"}
OTHER_FAULT_COLOURS = ["tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray"]

ANOMALY_MEANINGS = {
    "lost": "acknowledged sends that the final read does not hold",
    "duplicates": "values seen at more than one position (acknowledgements, polls, final read)",
    "unexpected_polls": "values read that no producer sent, or read before their send was invoked",
    "aborted_reads": "values read although their send failed definitely",
    "inconsistent_offsets": "positions seen holding different values (polls, final read, acknowledged offsets)",
    "nonmonotonic_polls": "a consumer saw a partition's offsets go backwards or repeat",
    "nonmonotonic_sends": "a producer's later send landed at a lower offset of the same partition",
    "poll_skips": "a consumer jumped over offsets that the final read holds",
    "double_completions": "sends that completed more than once (ok and fail, ok twice, ...)",
    "commit_regressions": "a group's committed offset for a partition went down",
}

HOW_TO_READ = """\
## How to read this

The run is PASS when the final read succeeded, every anomaly class above is empty, enough
writes were acknowledged for the check to mean something, and every partition took a write
after the last fault ended. The final read, taken after every fault was healed, is the ground
truth of what the log holds; every acknowledged send must be in it exactly once, at the position
its acknowledgement named. Sends that ended `info` (a timeout, a lost acknowledgement) may or may
not be in the log; either is correct, unless a poll saw the value: then it must be there.
"Unseen by consumers" counts acknowledged sends no live poll saw: information, not a failure.
In the fault table, "progress after" says whether a send was acknowledged (producer) or a poll
returned records (consumer) after the fault ended, and "next ok after" how long the first
acknowledged send took; a fault with no progress after it is where to look for a stall.
"Failover ms max" is, over the partitions the fault touched, the longest time from its start to
the first acknowledged send to that partition invoked after it started ("never": none was).
In the timeline, shaded windows are faults; a dip in acknowledged sends that outlasts its
window is a slow recovery.
"""


def write_report(result: dict, out_dir: str, meta: dict, history_file: str) -> str:
    """Write out_dir/report.md and out_dir/timeline.png for a checker result; return report.md's path.

    `meta` is free-form run metadata (command, seed, duration_s, ...), printed as given.
    `history_file` is linked relative to out_dir: an absolute path is made relative, a relative
    one is taken as already relative to out_dir (the runner writes the history next to the report).
    """
    os.makedirs(out_dir, exist_ok=True)
    _write_timeline(result, os.path.join(out_dir, TIMELINE_FILE))
    history_link = os.path.relpath(os.path.abspath(history_file), os.path.abspath(out_dir)) \
        if os.path.isabs(history_file) else history_file
    report_path = os.path.join(out_dir, REPORT_FILE)
    with open(report_path, "w", encoding="utf-8") as report:
        report.write(render_markdown(result, meta, history_link))
    return report_path


def render_markdown(result: dict, meta: dict, history_link: str) -> str:
    """The text of report.md; `history_link` is the history file's path relative to the report."""
    verdict = "PASS" if result["valid"] else "FAIL"
    anomaly_count = sum(len(found) for found in anomalies_of(result).values())
    sections = [
        f"# distlog chaos run: {verdict}\n",
        f"{_verdict_line(result, anomaly_count)}\n",
        "## Run\n",
        f"Command: `{meta.get('command', '(not recorded)')}`\n",
        _table([(key, _cell(value)) for key, value in meta.items() if key != "command"],
               ["setting", "value"]),
        "## Summary\n",
        _summary_table(result),
        "## Faults\n",
        _fault_table(result["faults"]),
        "## Anomalies\n",
        _anomaly_sections(anomalies_of(result)),
        "## Files\n",
        f"- timeline: [{TIMELINE_FILE}]({TIMELINE_FILE})\n- history: [{history_link}]({history_link})\n\n"
        f"![timeline]({TIMELINE_FILE})\n",
        HOW_TO_READ,
    ]
    return "\n".join(sections)


def _verdict_line(result: dict, anomaly_count: int) -> str:
    if result["final_read"] != "ok":
        return (f"**FAIL**: the final read is {result['final_read']}, so the log's contents could not "
                f"be checked ({_plural(anomaly_count, 'anomaly', 'anomalies')} found without it).")
    problems = []
    if anomaly_count:
        problems.append(f"{_plural(anomaly_count, 'anomaly', 'anomalies')} in {_nonempty_classes(result)}")
    if not result["enough_acked"]:
        problems.append(f"only {_plural(result['acked_writes'], 'acknowledged write', 'acknowledged writes')} "
                        f"(at least {result['min_acked']} needed: a run that wrote nothing proves nothing)")
    if not result["progress_after_heal"]:
        problems.append(f"partitions {_cell(result['stalled_after_heal'])} took no write after the last fault "
                        f"ended at {result['healed_t']:.2f} s")
    if result.get("harness_errors"):
        problems.append(f"harness errors: {_cell(result['harness_errors'])}")
    if problems:
        return "**FAIL**: " + "; ".join(problems) + "."
    return f"**PASS**: {result['sends']['ok']} acknowledged sends checked against the final read, no anomalies."


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def _nonempty_classes(result: dict) -> str:
    return ", ".join(name for name, found in anomalies_of(result).items() if found)


def _summary_table(result: dict) -> str:
    sends, reads = result["sends"], result["reads"]
    rows = [
        ("sends invoked", sends["invoked"]),
        ("sends ok (acknowledged)", sends["ok"]),
        ("sends fail (definitely not written)", sends["fail"]),
        ("sends info (indeterminate)", sends["info"]),
        ("polls that returned records", reads["polls"]),
        ("records polled", reads["records_polled"]),
        ("final read", result["final_read"]),
        ("records in the final read", reads["final_records"]),
        ("acknowledged sends unseen by consumers", result["unseen"]),
        ("every partition took a write after the last fault", _yes_no(result["progress_after_heal"])),
        ("failover ms p50 / max (per fault and partition)",
         f"{_ms(result['failover_ms_p50'])} / {_ms(result['failover_ms_max'])}"),
    ]
    return _table(rows, ["", "count"])


def _fault_table(faults: list) -> str:
    if not faults:
        return "No faults were injected.\n"
    rows = [(fault["id"], fault["f"], _cell(fault["target"]), f"{fault['start_t']:.2f}", f"{fault['end_t']:.2f}",
             f"{fault['end_t'] - fault['start_t']:.2f}", _yes_no(fault["producer_progress"]),
             _yes_no(fault["consumer_progress"]),
             "never" if fault["next_ok_after_s"] is None else f"{fault['next_ok_after_s']:.2f}",
             _ms(fault["failover_ms_max"]))
            for fault in faults]
    return _table(rows, ["id", "kind", "target", "start s", "end s", "duration s",
                         "producer progress after", "consumer progress after", "next ok after s",
                         "failover ms max"])


def _ms(value) -> str:
    return "never" if value is None else f"{value:.0f}"


def _anomaly_sections(anomalies: dict) -> str:
    parts = [_table([(name, len(found), ANOMALY_MEANINGS.get(name, "")) for name, found in anomalies.items()],
                    ["anomaly", "count", "meaning"])]
    for name, found in anomalies.items():
        if not found:
            continue
        shown = found[:EXAMPLES_PER_ANOMALY]
        more = f" (first {len(shown)} of {len(found)})" if len(found) > len(shown) else ""
        examples = "\n".join(f"- `{json.dumps(example)}`" for example in shown)
        parts.append(f"### {name}: {len(found)}{more}\n\n{examples}\n")
    return "\n".join(parts)


def _table(rows: list, headers: list) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", numalign="left", disable_numparse=True) + "\n"


def _cell(value) -> str:
    # Keep a table cell on one line: a multi-line value would break the markdown table.
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\n", " ").replace("|", "\\|")


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "NO"


def _write_timeline(result: dict, png_path: str) -> None:
    """Sends, polled records and failures per second over the fault windows (each labelled with
    its kind and targets, kills marked), and below them the slowest acknowledgement per second."""
    timeline = result["timeline"]
    bucket_s = timeline["bucket_s"]
    times_s = [i * bucket_s for i in range(len(timeline["ok_sends"]))]
    figure = Figure(figsize=FIGURE_SIZE_IN, dpi=FIGURE_DPI)
    FigureCanvasAgg(figure)
    axes, latency = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    axes.step(times_s, timeline["ok_sends"], where="post", color="tab:green", label="ok sends")
    axes.step(times_s, timeline.get("polled_records", []) or [0] * len(times_s), where="post", color="tab:blue",
              alpha=0.6, label="records polled")
    axes.step(times_s, timeline["failed_sends"], where="post", color="black", label="failed sends (fail + info)")
    _shade_faults(axes, result["faults"])
    axes.set_ylabel(f"per {bucket_s:g} s")
    axes.set_xlim(0, max(len(times_s) * bucket_s, bucket_s))
    axes.set_ylim(bottom=0)
    axes.set_title(f"distlog chaos: {'PASS' if result['valid'] else 'FAIL'}")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # outside: never hides data
    latency.step(times_s, timeline.get("max_ack_latency_ms", []) or [0] * len(times_s), where="post", color="tab:red")
    _shade_faults(latency, result["faults"], labels=False)
    latency.set_ylabel("slowest ack (ms)", fontsize="small")
    latency.set_yscale("symlog", linthresh=10)
    latency.set_ylim(bottom=0)
    latency.set_xlabel("run time (s)")
    figure.tight_layout()
    figure.savefig(png_path, format="png")


KILLS = ("kill", "leader-kill", "controller-kill", "torn-write", "corrupt", "power-loss")


def _shade_faults(axes, faults: list, labels: bool = True) -> None:
    unknown_kinds = sorted({fault["f"] for fault in faults} - FAULT_COLOURS.keys())
    colours = {**FAULT_COLOURS,
               **{kind: OTHER_FAULT_COLOURS[i % len(OTHER_FAULT_COLOURS)] for i, kind in enumerate(unknown_kinds)}}
    labelled = set()
    for fault in faults:
        kind = fault["f"]
        # One legend entry per kind, however many windows it has.
        label = None if kind in labelled or not labels else f"fault: {kind}"
        labelled.add(kind)
        axes.axvspan(fault["start_t"], fault["end_t"], color=colours[kind], alpha=0.2, label=label)
        if kind in KILLS:  # the moment of a SIGKILL, as a marker on the band's left edge
            axes.axvline(fault["start_t"], color=colours[kind], linewidth=0.8)
        if labels:  # which brokers, at the band's top
            targets = ",".join(map(str, fault.get("target", [])))
            axes.annotate(f"{kind} {targets}", (fault["start_t"], 1.0), xycoords=("data", "axes fraction"),
                          rotation=90, va="top", ha="right", fontsize=5, color=colours[kind])
