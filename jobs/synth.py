"""Write a deterministic synthetic chest X-ray archive in the NIH ChestX-ray14 layout (no Ray needed).

Under --out it writes images_001.tar.gz ... (members images/<patient>_<follow-up>.png), then
BBox_List_2017.csv, train_val_list.txt, test_list.txt and, last, Data_Entry_2017.csv, so a reader that
finds the Data_Entry file finds a complete archive. Same flags, same bytes: tar headers and gzip headers
carry no time, owner or host.

    tilescope synth --out runs/synth --n-images 200 --size 1024
    ray job submit --working-dir . -- python -m jobs.synth --out s3://bucket/synth --n-images 2000 --shards 8
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from cli.flags import coerce_choices, require_valid
from cli.job_main import job_main
from cli.progress import CountLine
from storage.fs import check_reachable, list_files, resolve, write_bytes_atomic
from storage.metadata_files import BBOX_LIST, DATA_ENTRY, SYNTH_MARKER, TEST_LIST, TRAIN_VAL_LIST
from xray.synth.detail import FindingDetail
from xray.synth.images import MIN_SIZE, encode_png, synth_case
from xray.synth.nih_files import CaseRecord, CsvStyle, render_bbox_csv, render_data_entry_csv, render_split_lists

MAX_SIZE = 4096
MAX_SHARDS = 999  # shard names carry three digits, like NIH's images_001..images_012
# A shard is built in memory and written with one write_bytes_atomic call (storage/ offers no streaming
# upload, so spooling it to a local temp file first would still need all its bytes in memory). Instead
# the shard size is bounded: noisy 8-bit PNGs take ~0.7 byte per pixel, and we refuse plans whose shards
# would exceed 1 GiB, pointing at --shards.
PNG_BYTES_PER_PIXEL = 0.7
MAX_SHARD_BYTES = 1 << 30
_SHARD_NAME = re.compile(r"images_\d{3}\.tar\.gz$")


@dataclass(frozen=True)
class SynthConfig:
    out: str
    """Archive directory or prefix to write (local path, file:// or s3://)."""
    n_images: int = 200
    """Number of images; patients own about 3 consecutive images each."""
    size: int = 1024
    """Side of the square 8-bit grayscale PNGs, pixels."""
    shards: int = 2
    """Number of images_NNN.tar.gz shards the images are spread over (contiguously)."""
    seed: int = 0
    """Seed of everything: images, findings, patients and the test split."""
    test_fraction: float = 0.2
    """Fraction of patients listed in test_list.txt (the rest go to train_val_list.txt)."""
    csv_style: CsvStyle = CsvStyle.V2017
    """Data_Entry format: 2017 (trailing comma on every line) or 2020 (none)."""
    finding_scale: float = 1.0
    """Size factor of the focal findings (nodule, mass, ...): 0.5 makes small findings that a whole-image
    downscale loses, the case tile ensembles are for."""
    detail: FindingDetail = FindingDetail.COARSE
    """How findings are drawn: coarse (every finding at <= 256 px, upscaled; the default, same bytes as before) or
    fine (nodules, masses and plate atelectasis at full resolution, faint, with evidence in specks and thin lines
    that a whole-image downscale loses: the setting for comparing tile ensembles with downscaled models)."""
    force: bool = False
    """Write into a non-empty --out, overwriting the archive files synth writes (never needed for a new one)."""
    s3_endpoint: str | None = None
    """S3 endpoint for MinIO/Ceph/moto; default from the environment."""


@dataclass(frozen=True)
class SynthSummary:
    """What run() wrote; main() prints it as one line."""

    out: str
    n_images: int
    n_patients: int
    n_train_val: int
    n_test: int
    n_bboxes: int
    shards: tuple[str, ...]  # URIs, in order
    bytes_written: int
    seconds: float


def validate(cfg: SynthConfig) -> None:
    """Raise one ValueError naming every bad flag."""
    problems = []
    if not cfg.out.strip():
        problems.append("--out must name a directory or s3:// prefix")
    if cfg.n_images < 1:
        problems.append(f"--n-images must be at least 1, got {cfg.n_images}")
    if not MIN_SIZE <= cfg.size <= MAX_SIZE:
        problems.append(f"--size must be in [{MIN_SIZE}, {MAX_SIZE}], got {cfg.size}")
    if not 1 <= cfg.shards <= MAX_SHARDS:
        problems.append(f"--shards must be in [1, {MAX_SHARDS}], got {cfg.shards}")
    elif cfg.n_images >= 1 and cfg.shards > cfg.n_images:
        problems.append(f"--shards {cfg.shards} exceeds --n-images {cfg.n_images}; a shard cannot be empty")
    elif cfg.n_images >= 1 and MIN_SIZE <= cfg.size <= MAX_SIZE:
        per_shard = -(-cfg.n_images // cfg.shards)
        estimate = per_shard * cfg.size * cfg.size * PNG_BYTES_PER_PIXEL
        if estimate > MAX_SHARD_BYTES:
            needed = -(-int(cfg.n_images * cfg.size * cfg.size * PNG_BYTES_PER_PIXEL) // MAX_SHARD_BYTES)
            problems.append(f"--shards {cfg.shards}: ~{estimate / 2**30:.1f} GiB per shard is held in "
                            f"memory; use --shards {needed} or more")
    if cfg.seed < 0:
        problems.append(f"--seed must be non-negative, got {cfg.seed}")
    if not 0.0 < cfg.test_fraction < 1.0:
        problems.append(f"--test-fraction must be in (0, 1), got {cfg.test_fraction}")
    if not 0.1 <= cfg.finding_scale <= 2.0:
        problems.append(f"--finding-scale must be in [0.1, 2.0], got {cfg.finding_scale}")
    problems += coerce_choices(cfg)
    require_valid(problems)


def shard_plan(n_images: int, shards: int) -> list[tuple[str, range]]:
    """(file name, image indices) per shard: contiguous, sizes differing by at most one."""
    return [(f"images_{k + 1:03d}.tar.gz", range(k * n_images // shards, (k + 1) * n_images // shards))
            for k in range(shards)]


def build_shard(indices: range, seed: int, size: int, finding_scale: float = 1.0,
                detail: FindingDetail = FindingDetail.COARSE,
                on_image: Callable[[], None] | None = None) -> tuple[bytes, list[CaseRecord]]:
    """A deterministic tar.gz of images/<name>.png for `indices`, and the cases' metadata; on_image, if given, is
    called after each image (a progress line)."""
    buf = io.BytesIO()
    records: list[CaseRecord] = []
    # PNG payloads are already deflated: gzip level 1 saves CPU and loses almost nothing. mtime=0 and
    # an empty file name keep the gzip header free of time and host.
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index in indices:
            case = synth_case(index, seed, size, finding_scale, FindingDetail(detail))
            png = encode_png(case.image)
            info = tarfile.TarInfo(f"images/{case.image_index}")
            info.size, info.mtime, info.mode = len(png), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(png))
            records.append(case.record())
            if on_image is not None:
                on_image()
    return buf.getvalue(), records


def _check_target(out_uri: str, planned: Sequence[str], endpoint: str | None, force: bool) -> None:
    """Nothing under --out is overwritten unless --force: pointed at a folder of real NIH shards, synth would
    otherwise replace them. Even with --force, shards of an earlier, larger run would leak into readers."""
    loc = resolve(out_uri, endpoint)
    present = [p.rsplit("/", 1)[-1] for p in list_files(loc, recursive=True)]
    if present and not force:
        raise ValueError(f"--out {out_uri} is not empty ({len(present)} files, e.g. {', '.join(sorted(present)[:3])}); "
                         "synth writes only into an empty or new directory. Choose another --out, or pass --force "
                         "to overwrite the archive files it writes")
    stale = sorted(name for name in present if _SHARD_NAME.match(name) and name not in planned)
    if stale:
        raise ValueError(f"--out {out_uri} already holds {', '.join(stale[:5])} from an earlier run with "
                         "more shards; write to an empty --out or delete those files")


def run(cfg: SynthConfig) -> SynthSummary:
    """Generate, write and summarise the archive; see the module docstring for the layout."""
    validate(cfg)
    start = time.perf_counter()
    out = resolve(cfg.out, cfg.s3_endpoint)
    check_reachable(out)
    plan = shard_plan(cfg.n_images, cfg.shards)
    _check_target(cfg.out, [name for name, _ in plan], cfg.s3_endpoint, cfg.force)
    records: list[CaseRecord] = []
    shard_uris: list[str] = []
    written = 0
    progress = CountLine("synth", f"drawing {cfg.size} px images into {len(plan)} shards", cfg.n_images)
    for name, indices in plan:
        data, shard_records = build_shard(indices, cfg.seed, cfg.size, cfg.finding_scale, cfg.detail,
                                          on_image=progress.tick)
        target = out.join(name)
        write_bytes_atomic(target, data)
        shard_uris.append(target.uri)
        records.extend(shard_records)
        written += len(data)
    train_val, test = render_split_lists(records, cfg.test_fraction, cfg.seed)
    bbox_csv = render_bbox_csv(records)
    # The marker says the archive is synthetic wherever its metadata goes (the report's page states it).
    marker = json.dumps({"generator": "tilescope synth", "synthetic": True, "patient_data": False,
                         "config": {k: v for k, v in asdict(cfg).items() if k not in ("out", "s3_endpoint", "force")}},
                        indent=2, sort_keys=True, default=str) + "\n"
    texts = [(BBOX_LIST, bbox_csv), (TRAIN_VAL_LIST, train_val), (TEST_LIST, test), (SYNTH_MARKER, marker),
             (DATA_ENTRY, render_data_entry_csv(records, CsvStyle(cfg.csv_style)))]  # Data_Entry last
    for name, text in texts:
        data = text.encode("utf-8")
        write_bytes_atomic(out.join(name), data)
        written += len(data)
    return SynthSummary(
        out=out.uri, n_images=len(records), n_patients=len({r.patient_id for r in records}),
        n_train_val=train_val.count("\n"), n_test=test.count("\n"), n_bboxes=bbox_csv.count("\n") - 1,
        shards=tuple(shard_uris), bytes_written=written, seconds=time.perf_counter() - start,
    )


def print_summary(s: SynthSummary) -> None:
    print(f"synth: {s.n_images} images of {s.n_patients} patients ({s.n_train_val} train_val, "
          f"{s.n_test} test), {s.n_bboxes} boxes, {len(s.shards)} shards, "
          f"{s.bytes_written / 2**20:.1f} MiB to {s.out} in {s.seconds:.1f}s")


def main(argv: list[str] | None = None) -> int:
    # StorageError is an OSError: job_main reports it like any other storage failure.
    return job_main(SynthConfig, run, "tilescope synth", __doc__, argv, print_summary=print_summary)


if __name__ == "__main__":
    raise SystemExit(main())
