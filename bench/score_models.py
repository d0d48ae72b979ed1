"""Several models in one pass (issue 26): K = 3 INT8 models scored by three separate `tilescope score` runs against
one `tilescope score --model A --model B --model C` pass, on the same archive, Ray session and host, in alternating
order (separate, pass, separate, pass). Small models on big PNGs, where decoding costs more than inference: the
case a shared pass is for (and the case of any model on AMX).

Per way: the pipelines' wall seconds summed, images/s per model-run, and per image the decode, inference, read,
write, Ray-and-driver and idle core-ms from the runs' own manifests (jobs/score_stages.py ScoringCost). Target: the
pass >= 1.5x faster than the three runs, i.e. K models cost about (read + decode + overhead) + K x inference.

    .venv/bin/python -m bench.score_models               (about 5 minutes on 2 cores)
    .venv/bin/python -m bench.score_models --quick       (a minute: tiny archive, prints, writes nothing)
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch

from bench.doc_sections import machine_line, write_section
from bench.run_costs import run_cost
from bench.scoring import make_model
from cli.job_main import local_system_config
from jobs import score, synth

SECTION = "score-models"
MODELS = (("dwsep_cnn", 0), ("dwsep_cnn", 1), ("dwsep_cnn", 2))


def separate(archive: str, models: list[str], out: str) -> dict:
    runs = [score.run(score.ScoreConfig(archive=archive, model=m, out=out, progress_every_s=60.0)) for m in models]
    costs = [run_cost(r) for r in runs]
    return {"seconds": sum(r.stream_seconds for r in runs), "images": sum(r.scored_now for r in runs),
            "decode": sum(c["decode_core_ms_per_image"] for c in costs),
            "infer": sum(c["infer_core_ms_per_image"] for c in costs),
            "read": sum(c["read_core_ms_per_image"] for c in costs),
            "write": sum(c["write_core_ms_per_image"] for c in costs),
            "rest": sum(c["rest_core_ms_per_image"] for c in costs),
            "idle": sum(c["idle_core_ms_per_image"] for c in costs)}


def one_pass(archive: str, models: list[str], out: str) -> dict:
    run = score.run(score.ScoreConfig(archive=archive, model=tuple(models), out=out, progress_every_s=60.0))
    costs = [run_cost(m) for m in run.models]
    first = costs[0]
    return {"seconds": run.stream_seconds, "images": sum(m.scored_now for m in run.models),
            "decode": first["decode_core_ms_per_image"], "infer": sum(c["infer_core_ms_per_image"] for c in costs),
            "read": first["read_core_ms_per_image"],
            "write": sum(c["write_core_ms_per_image"] for c in costs), "rest": first["rest_core_ms_per_image"],
            "idle": first["idle_core_ms_per_image"]}


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--size", type=int, default=1024, help="side of the synthetic PNGs")
    parser.add_argument("--input-size", type=int, default=128, help="the models' input side")
    parser.add_argument("--rounds", type=int, default=2, help="separate/pass pairs, alternating")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.images, args.size, args.input_size, args.rounds = 96, 256, 64, 1
    torch.set_num_threads(2)
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        archive = os.path.join(tmp, "archive")
        synth.run(synth.SynthConfig(out=archive, n_images=args.images, size=args.size, shards=4, seed=5))
        models = [make_model(tmp, archive, name, seed, args.input_size, calibration=32) for name, seed in MODELS]
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False,
                 _system_config=local_system_config(cores))
        try:
            results: dict[str, list[dict]] = {"three separate runs": [], "one pass, --model x 3": []}
            for r in range(args.rounds):
                results["three separate runs"].append(separate(archive, models, os.path.join(tmp, f"sep-{r}")))
                results["one pass, --model x 3"].append(one_pass(archive, models, os.path.join(tmp, f"pass-{r}")))
        finally:
            ray.shutdown()
    best = {way: min(rs, key=lambda x: x["seconds"]) for way, rs in results.items()}
    sep, one = best["three separate runs"], best["one pass, --model x 3"]
    speedup = sep["seconds"] / one["seconds"]
    rows = "\n".join(
        f"| {way} | {r['seconds']:.1f} | {r['images'] / r['seconds']:.1f} | {r['read']:.2f} | {r['decode']:.2f} | "
        f"{r['infer']:.2f} | {r['write']:.2f} | {r['rest']:.2f} | {r['idle']:.2f} |" for way, r in best.items())
    command = ".venv/bin/python -m bench.score_models" + (" --quick" if args.quick else "")
    md = f"""### Several models in one pass (`{command}`)

Machine: {machine_line()}. {args.images} synthetic {args.size} px PNGs in 4 tar.gz shards; three INT8 dwsep_cnn models
(random weights, seeds 0-2) at {args.input_size} px, so decoding costs more than inference. Three separate `tilescope
score` runs against one pass with `--model` three times, in one local Ray session, alternating ({args.rounds} rounds;
the faster of each way shown). Core-ms per image from the runs' manifests, summed over the models where each run
pays its own (for the pass: read, decode, Ray and driver and idle once, inference and writing per model).

| way | pipeline seconds | model-runs per s | read | decode | inference | write | Ray and driver | idle |
|---|---|---|---|---|---|---|---|---|
{rows}

The pass is {speedup:.2f}x faster than the three runs (target >= 1.5x: {'met' if speedup >= 1.5 else 'NOT met'}).
"""
    if not args.quick:
        write_section(SECTION, md)
    print(md)


if __name__ == "__main__":
    main()
