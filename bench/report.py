"""`tilescope report` on NIH-sized runs: the wall time of a 120k-row report (target: under 10 s), single run and
against predictions from elsewhere, in-process (report.run) and as the command a user types (with imports).

A synthetic run is written the way `tilescope score` writes one, twice: compacted at commit (one file per shard,
12 shards as NIH) and as the chunk files before compaction (one per ~20 rows, --rows-per-file), with its model
artifact (a manifest recording the patient split; stub IR files) and Data_Entry_2017.csv + split lists; the
second model is a CSV of predictions in the form CheXNet reimplementations publish. Each case runs --repeats
times, alternating; the best is reported.

    .venv/bin/python -m bench.report                 (about 5 minutes on 2 cores)
    .venv/bin/python -m bench.report --rows 3000 --repeats 1 --dry-run     (a check that it runs; writes nothing)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from bench.doc_sections import machine_line, write_section
from jobs import report
from storage.artifacts import write_artifact
from storage.fs import resolve, write_json
from storage.metadata_files import load_metadata
from storage.results import RUN_MANIFEST, results_schema, results_table, row_status, write_chunk
from xray.metadata.labels import LABELS, prob_column
from xray.metadata.manifests import ModelManifest, SplitRecord
from xray.metadata.nih import DATA_ENTRY_HEADER
from xray.metadata.splits import split_by_patient

PREVALENCE = np.array([.10, .025, .12, .18, .05, .056, .013, .047, .04, .02, .022, .015, .03, .004])


def write_inputs(root: str, rows: int, rows_per_file: int) -> dict[str, str]:
    """root/archive (metadata), root/model (artifact), root/run (12 files) and root/chunks (a file per
    rows_per_file rows): the same run; root/other.csv (predictions), root/val_list.txt (held-out patients)."""
    rng = np.random.default_rng(0)
    patients = np.arange(rows) // 3 + 1
    ids = np.array([f"{p:08d}_{i % 3:03d}.png" for i, p in enumerate(patients)], dtype=object)
    y = rng.random((rows, len(LABELS))) < PREVALENCE
    probs = (1 / (1 + np.exp(-(rng.normal(-2, 1, y.shape) + 1.5 * y)))).astype(np.float32)
    archive = os.path.join(root, "archive")
    os.makedirs(archive)
    names = np.array(LABELS)
    with open(os.path.join(archive, "Data_Entry_2017.csv"), "w") as f:
        f.write(",".join(DATA_ENTRY_HEADER) + ",\n")
        f.writelines(f"{image},{'|'.join(names[y[i]]) or 'No Finding'},{i % 3},{patients[i]},50,M,PA,1024,1024,"
                     "0.143,0.143,\n" for i, image in enumerate(ids))
    test = patients % 5 == 0
    for name, part in (("test_list.txt", ids[test]), ("train_val_list.txt", ids[~test])):
        with open(os.path.join(archive, name), "w") as f:
            f.write("\n".join(part) + "\n")
    stub = b"<!-- stub IR -->"
    model = os.path.join(root, "model")
    sha = write_artifact(model, {"int8/model.xml": stub}, ModelManifest(
        model="bench", labels=LABELS, input_size=224, irs={"int8": "int8/model.xml"}, split=SplitRecord(0.15, 0)))
    schema = results_schema(list(LABELS))
    shard_of = np.arange(rows) * 12 // rows + 1
    batch = {"image_id": ids, "status": row_status(np.ones(rows, bool)), "error": np.full(rows, None, dtype=object),
             "source": np.array([f"images_{s:03d}.tar.gz:images/{i}" for s, i in zip(shard_of, ids, strict=True)],
                                dtype=object),
             "decode_ms": np.ones(rows, np.float32), "infer_ms": np.ones(rows, np.float32),
             **{prob_column(label): probs[:, j] for j, label in enumerate(LABELS)}}
    for name, per_file in (("run", None), ("chunks", rows_per_file)):
        run = resolve(os.path.join(root, name))
        for shard in range(1, 13):
            members = np.flatnonzero(shard_of == shard)
            step = per_file or members.size
            for k, start in enumerate(range(0, members.size, step)):
                write_chunk(run, f"images_{shard:03d}.tar.gz", k, start + step >= members.size,
                            results_table(batch, members[start:start + step], schema, "bench", sha, "int8", "bench"))
        write_json(run, RUN_MANIFEST, {"run_id": "bench", "rows": rows, "ok": rows, "errors": 0, "model": "bench",
                                       "precision": "int8", "artifact_uri": model, "artifact_sha256": sha})
    other = np.clip(probs + rng.normal(0, 0.05, probs.shape), 0, 1)
    csv = os.path.join(root, "other.csv")
    pacsv.write_csv(pa.table({"Image Index": ids.astype(str),
                               **{label: other[:, j] for j, label in enumerate(LABELS)}}), csv)
    meta = os.path.join(archive, "Data_Entry_2017.csv")
    val_list = os.path.join(root, "val_list.txt")  # the model's held-out patients, for the CSV's thresholds
    with open(val_list, "w") as f:
        f.write("\n".join(sorted(split_by_patient(load_metadata(meta), 0.15, 0).val)) + "\n")
    return {"run": os.path.join(root, "run"), "chunks": os.path.join(root, "chunks"), "csv": csv, "metadata": meta,
            "val_list": val_list, "files": str(len(os.listdir(os.path.join(root, "chunks"))) - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--rows-per-file", type=int, default=20, help="~20: one file per chunk, as scoring leaves NIH")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="print the table, leave docs/BENCHMARKS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        inputs = write_inputs(tmp, args.rows, args.rows_per_file)
        common = {"metadata": inputs["metadata"]}
        cases = {
            "one run (defaults: AUROC on test, 1000 resamples, thresholds fit on val)":
                {"results": (inputs["run"],)},
            f"the same, the run's {inputs['files']} chunk files before compaction":
                {"results": (inputs["chunks"],)},
            "run vs predictions CSV (deltas, baseline CIs, flag agreement via --val-list)":
                {"results": (inputs["run"], inputs["csv"]), "val_list": inputs["val_list"]},
            "one run, --eval-split all --view-split all (every image bootstrapped and ranked)":
                {"results": (inputs["run"],), "eval_split": "all", "view_split": "all"},
        }
        best: dict[str, float] = {name: float("inf") for name in cases}
        command = float("inf")
        for r in range(args.repeats):
            for k, (name, extra) in enumerate(cases.items()):
                cfg = report.ReportConfig(out=os.path.join(tmp, f"out-{k}-{r}"), **common, **extra)
                t0 = time.perf_counter()
                report.run(cfg)
                best[name] = min(best[name], time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "jobs.report", "--results", inputs["run"], "--metadata",
                            inputs["metadata"], "--out", os.path.join(tmp, f"cli-{r}")], check=True,
                           capture_output=True)
            command = min(command, time.perf_counter() - t0)
    rows = [f"| {name} | {seconds:.1f} |" for name, seconds in best.items()]
    rows.append(f"| `python -m jobs.report` for the first case, as a user runs it (imports included) | {command:.1f} |")
    md = f"""## Report on a {args.rows // 1000}k-row run

Command: `.venv/bin/python -m bench.report --rows {args.rows} --rows-per-file {args.rows_per_file} --repeats {args.repeats}`
Machine: {machine_line()}.
{args.rows} result rows in 12 Parquet files (one per shard, as compacted at commit), 14 labels, 3 images per
patient, test_list = 20% of patients; the model's artifact holds out 15% of the other patients for validation.
Best of {args.repeats} alternating rounds. Target: under 10 s.

| case | seconds |
|---|---|
""" + "\n".join(rows) + "\n"
    if not args.dry_run:
        write_section("report", md)
    print(md)


if __name__ == "__main__":
    main()
