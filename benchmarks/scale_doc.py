"""docs/scale.md's measured tables and its projection, from the benchmark JSON alone.

    .venv/bin/python benchmarks/scaling.py --stages-only --out benchmarks/results/scaling_stages.json
    .venv/bin/python benchmarks/scaling.py --driver-only > benchmarks/results/scaling_driver.json
    .venv/bin/python benchmarks/scale_doc.py [--write docs/scale.md] [--hours 1000] [--nodes 1,10,50,100,200]

Prints the Markdown (with `--write`, replaces the part of the file between the
`<!-- scale_doc -->` markers), so the page follows the figures whenever they are measured
again. Everything taken as given rather than measured is a flag here and says *assumed* in
the output.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- scale_doc -->", "<!-- /scale_doc -->"
# Stages as the curator names them (`cpu.<stage>` timings), with what each does.
STAGES = {"probe": "probe (container, first frame)", "decode": "decode (the one pass)",
          "shots": "shots (gate + TransNetV2 on flagged blocks)",
          "faces": "faces (dlib detection, landmarks, embeddings)",
          "tracks": "tracks (linking, embeddings where overlap is ambiguous, drift checks)",
          "text": "text (PP-OCR)", "write": "write (crop, scale, x264 of kept clips)"}


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _h(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:,.0f} h" if hours >= 10 else f"{hours:,.1f} h" if hours >= 1 \
        else f"{seconds / 60:,.0f} min"


def render(stages: dict, driver: dict, hours: float, fps: float, input_minutes: float,
           cores: int, nodes: list[int], kept: float, mbit: float) -> str:
    cur, deg = stages["curate"], stages["degrade"]
    at = stages["measured_at"]
    per_stage = cur["stage_cpu_seconds_per_1000_frames"]
    total = cur["cpu_seconds_per_1000_frames"]
    known = sum(per_stage.values())
    ms_driver = driver["driver"]["now"]["driver_cpu_ms_per_input"]
    dirty = ", ".join(at["uncommitted_paths"]) or "none"
    out = [f"Measured at commit `{at['commit']}` (uncommitted changes in the tree then: "
           f"{dirty}) by `benchmarks/scaling.py --stages-only`: one `stc curate` and one "
           f"`stc degrade` with one worker on {cur['videos']} inputs "
           f"({cur['input_frames']:,} frames, `{stages['inputs']['config']}` config; degrade "
           f"{stages['degrade_settings']['recipe']}, {stages['degrade_settings']['window']}-frame "
           f"windows at {stages['degrade_settings']['size']} px). Figures are **CPU seconds** "
           "(each stage's worker-thread time, the write's x264 child included), which the "
           "machine's load does not change; wall figures are measured under load from "
           f"parallel jobs (load average {stages['machine']['load_avg_1m_before']}-"
           f"{stages['machine']['load_avg_1m_after']} on {stages['machine']['cpus']} vCPUs).",
           "", "| curate stage | CPU s per 1,000 input frames | share |", "| --- | --- | --- |"]
    small = sorted(n for n, v in per_stage.items() if v / total < 0.01)
    for name, secs in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        if name not in small:
            out.append(f"| {STAGES.get(name, name)} | {secs:.2f} | {secs / total:.0%} |")
    rest = total - known + sum(per_stage[n] for n in small)
    out += [f"| other ({', '.join(small)}; Python between stages) | {rest:.2f} | "
            f"{rest / total:.0%} |",
            f"| **curate, all stages** | **{total:.2f}** | |",
            f"| degrade (per 1,000 output frames) | {deg['cpu_seconds_per_1000_frames']:.2f} | |",
            "",
            f"Wall, measured under load: curate {cur['input_frames_per_s']:.0f} input frames/s "
            f"with one worker, degrade {deg['frames_per_s']:.0f} frames/s. "
            f"Driver: **{ms_driver:.2f} ms of CPU per input** on a 2-node cluster "
            f"(`benchmarks/results/scaling_driver.json`, measured at "
            f"`{driver.get('measured_at', {}).get('commit', 'an earlier commit')}` with a near-free "
            "worker, so that only the driver's own cost shows; "
            f"{driver['driver']['before']['driver_cpu_ms_per_input']:.2f} ms before issue 27), "
            f"so one driver keeps up with {1000 / ms_driver:,.0f} inputs/s.", ""]
    frames = hours * 3600 * fps
    cpu = frames / 1000 * total
    per_input = input_minutes * 60 * fps / 1000 * total          # CPU s per input
    inputs = hours * 60 / input_minutes
    degrade_cpu = frames * kept / 1000 * deg["cpu_seconds_per_1000_frames"]
    n_driver = 1000 / ms_driver * per_input / cores
    top = max(per_stage, key=per_stage.get)
    out += [f"### {hours:,.0f} hours of footage",
            "",
            f"*Assumed*: {fps:g} fps, inputs of {input_minutes:g} min ({inputs:,.0f} inputs), "
            f"{cores}-core nodes, the measured clips' mix of kept and rejected footage and "
            f"their size (≤ 512 px; 1080p decodes more pixels), CPU efficiency 1.0 (measured "
            f"0.93-1.00 in `scaling.json`). {frames / 1e6:,.0f} M frames x {total:.2f} CPU s "
            f"per 1,000 = **{cpu / 3600:,.0f} CPU-hours** of curation "
            f"({per_input:,.0f} CPU s per input); degrading the kept "
            f"{kept:.0%} (*assumed*) into pairs adds {degrade_cpu / 3600:,.0f} CPU-hours.",
            "", f"| nodes | curate wall | inputs/s the driver receives | driver busy | "
            f"bucket read at {mbit:g} Mbit/s per input (*assumed*) |",
            "| --- | --- | --- | --- | --- |"]
    for n in nodes:
        rate = n * cores / per_input
        video_s = n * cores / (fps / 1000 * total)              # seconds of footage per second
        # An input runs on one core: with fewer inputs than cores, its length bounds the wall.
        wall = math.ceil(inputs / (n * cores)) * per_input
        out.append(f"| {n} | {_h(wall)} | {rate:,.2f} | {rate * ms_driver / 1000:.2%} | "
                   f"{video_s * mbit / 8:,.0f} MB/s |")
    out += ["", f"**First bottleneck: the workers' CPU, and in it `{top}`** "
            f"({per_stage[top] / total:.0%} of curation's CPU): a cluster finishes in "
            "CPU-hours / cores, rounded up to whole inputs per core (an input runs on one core, "
            f"so beyond {inputs / cores:,.0f} nodes the {input_minutes:g}-min input's own "
            f"{per_input / 60:,.1f} CPU-minutes are the wall). The driver is not what limits: it "
            f"would bind only at ~{n_driver:,.0f} nodes of {cores} cores with "
            f"{input_minutes:g}-min inputs (at {1000 / ms_driver:,.0f} inputs/s), and at "
            f"~{n_driver * 10 / (input_minutes * 60):,.0f} nodes with 10-s clips. Next after "
            "the CPU is the bucket's read bandwidth (last column): each node reads "
            f"{cores / (fps / 1000 * total) * mbit / 8:,.0f} MB/s, which any node's network "
            "carries; the aggregate is the object store's to serve."]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", default=str(RESULTS / "scaling_stages.json"))
    ap.add_argument("--driver", default=str(RESULTS / "scaling_driver.json"))
    ap.add_argument("--hours", type=float, default=1000)
    ap.add_argument("--fps", type=float, default=25, help="assumed frame rate of the footage")
    ap.add_argument("--input-minutes", type=float, default=10, help="assumed length of an input")
    ap.add_argument("--cores-per-node", type=int, default=32)
    ap.add_argument("--nodes", default="1,10,50,100,200")
    ap.add_argument("--kept", type=float, default=0.2, help="assumed share of frames kept")
    ap.add_argument("--mbit", type=float, default=5, help="assumed input bit rate, Mbit/s")
    ap.add_argument("--write", help="a Markdown file whose scale_doc section to replace")
    a = ap.parse_args()
    text = render(_load(Path(a.stages)), _load(Path(a.driver)), a.hours, a.fps, a.input_minutes,
                  a.cores_per_node, [int(n) for n in a.nodes.split(",")], a.kept, a.mbit)
    if a.write:
        doc = Path(a.write).read_text()
        if BEGIN not in doc or END not in doc:
            raise SystemExit(f"{a.write} has no {BEGIN} ... {END} section to replace")
        doc = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END),
                     lambda _: f"{BEGIN}\n{text}{END}", doc, flags=re.S)
        Path(a.write).write_text(doc)
    print(text, end="")


if __name__ == "__main__":
    main()
