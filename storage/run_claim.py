"""A scoring run's claim on its output directory (`_run.json`, written before any row): which archive, which
shards (by path relative to the archive root, with a fingerprint of their content), which model and which
chunking. A rerun resumes only what the claim says it may:

- the same archive, artifact and chunking: resume (skip written chunks);
- shards added to the archive since: scored too, and the claim is extended (NIH shards arrive one by one);
- a shard changed or removed since: refused, naming it (its rows would no longer match its bytes);
- a different --chunk-size / --chunk-mb: refused, naming the flag (chunk k would hold other members, so
  written chunks would be lost or duplicated);
- a different archive or artifact: refused (that is another run: another --out);
- a different setting that changes rows (--precision, --max-pixels, as the claim's config recorded them):
  refused naming both values (int8 and fp32 rows of one model must not mix in one run).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from storage.archives import Shard

CLAIM_VERSION = 2


@dataclass(frozen=True)
class Chunking:
    """What decides which members chunk k of a shard holds."""

    chunk_size: int
    chunk_mb: int

    def to_json(self) -> dict:
        return {"chunk_size": self.chunk_size, "chunk_mb": self.chunk_mb}


@dataclass(frozen=True)
class RunClaim:
    run_id: str
    archive: str
    artifact_sha256: str
    chunking: Chunking
    shards: dict[str, str]
    """shard name (path relative to the archive root) -> fingerprint."""
    config: dict = field(default_factory=dict)
    started_unix: float = 0.0
    loose_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Every group of loose files -> its `<relative path>\t<size>` lines (storage/archives.py Shard.listing)."""

    def to_json(self) -> dict:
        body = {"claim_version": CLAIM_VERSION, "run_id": self.run_id, "archive": self.archive,
                "artifact_sha256": self.artifact_sha256, "chunking": self.chunking.to_json(),
                "shards": dict(sorted(self.shards.items())), "config": self.config,
                "started_unix": self.started_unix}
        if self.loose_files:
            body["loose_files"] = {name: list(lines) for name, lines in sorted(self.loose_files.items())}
        return body

    @classmethod
    def from_json(cls, body: dict, where: str) -> RunClaim:
        if body.get("claim_version") != CLAIM_VERSION or not isinstance(body.get("shards"), dict):
            raise ValueError(f"{where}: written by an earlier tilescope without the archive's identity "
                             f"(claim version {body.get('claim_version', 1)}); it cannot be resumed safely. "
                             "Score into a new --out")
        c = body["chunking"]
        return cls(body["run_id"], body["archive"], body["artifact_sha256"],
                   Chunking(int(c["chunk_size"]), int(c["chunk_mb"])), dict(body["shards"]),
                   body.get("config", {}), float(body.get("started_unix", 0.0)),
                   {name: tuple(lines) for name, lines in (body.get("loose_files") or {}).items()})


def new_claim(run_id: str, archive: str, artifact_sha256: str, chunking: Chunking, shards: Sequence[Shard],
              config: dict) -> RunClaim:
    return RunClaim(run_id, archive, artifact_sha256, chunking, {s.name: s.fingerprint for s in shards}, config,
                    time.time(), {s.name: s.listing for s in shards if s.listing})


@dataclass(frozen=True)
class Reconciled:
    """A claim checked against what the archive holds now."""

    claim: RunClaim
    """The claim to keep (extended by new shards)."""
    new_shards: tuple[str, ...]
    """Shards the claim did not know: scored this time."""


ROW_SETTINGS = {"precision": "--precision", "max_pixels": "--max-pixels"}
"""Config fields that change what a row holds: a resume must keep them (claim field -> flag)."""


def reconcile(claim: RunClaim, run_id: str, archive: str, artifact_sha256: str, chunking: Chunking,
              shards: Sequence[Shard], where: str, settings: Mapping[str, object] | None = None) -> Reconciled:
    """Check a rerun against its claim; raises ValueError naming the flag or the shards that prevent a resume.
    `settings` holds this run's values of ROW_SETTINGS (a claim that did not record one is not checked for it)."""
    if claim.run_id != run_id:
        raise ValueError(f"--run-id {run_id}: {where} already holds run {claim.run_id}; pass --run-id "
                         f"{claim.run_id} to resume it, or choose another --out")
    if claim.archive != archive:
        raise ValueError(f"--archive {archive}: {where} holds run {claim.run_id} of archive {claim.archive}; "
                         "score this archive into another --out")
    if claim.artifact_sha256 != artifact_sha256:
        raise ValueError(f"--model: {where} holds run {claim.run_id} of artifact {claim.artifact_sha256[:12]}; "
                         "score this artifact into another --out")
    for flag, then, now in (("--chunk-size", claim.chunking.chunk_size, chunking.chunk_size),
                            ("--chunk-mb", claim.chunking.chunk_mb, chunking.chunk_mb)):
        if then != now:
            raise ValueError(f"{flag} {now}: run {claim.run_id} in {where} was started with {flag} {then}; chunks "
                             f"already written would be mixed with differently cut ones. Rerun with {flag} {then}, "
                             "or score into a new --out")
    for key, now in (settings or {}).items():
        then = claim.config.get(key)
        if then is not None and str(then) != str(now):
            flag = ROW_SETTINGS[key]
            raise ValueError(f"{flag} {now}: run {claim.run_id} in {where} was started with {flag} {then}; its rows "
                             f"would mix the two. Rerun with {flag} {then}, or score into a new --out")
    current = {s.name: s.fingerprint for s in shards}
    removed = sorted(set(claim.shards) - set(current))
    changed = sorted(n for n in set(claim.shards) & set(current) if claim.shards[n] != current[n])
    if removed or changed:
        loose = [n for n in removed + changed if n in claim.loose_files]
        if loose:
            raise ValueError(f"--archive {archive}: loose files of run {claim.run_id} in {where} changed since it "
                             f"started ({_file_changes(claim, loose, shards)}); their rows would no longer match the "
                             "archive. Restore them, or score the archive into a new --out")
        parts = ([f"removed: {', '.join(removed[:5])}"] if removed else []) + \
                ([f"changed: {', '.join(changed[:5])}"] if changed else [])
        raise ValueError(f"--archive {archive}: shards of run {claim.run_id} in {where} are gone or different "
                         f"({'; '.join(parts)}); their rows no longer match the archive. Restore them, or score "
                         "the archive into a new --out")
    new = tuple(sorted(set(current) - set(claim.shards)))
    listings = {s.name: s.listing for s in shards if s.listing and s.name in new}
    extended = RunClaim(claim.run_id, claim.archive, claim.artifact_sha256, claim.chunking,
                        {**claim.shards, **{n: current[n] for n in new}}, claim.config, claim.started_unix,
                        {**claim.loose_files, **listings})
    return Reconciled(extended, new)


def _file_changes(claim: RunClaim, groups: Sequence[str], shards: Sequence[Shard]) -> str:
    """Which loose files differ between the claim and the archive now, by name: added, gone, or resized. (Files
    are grouped in sorted order, so one new file can shift later files into another group: compare them all.)"""
    def sizes(lines) -> dict[str, str]:
        return dict(line.rsplit("\t", 1) for line in lines)

    then = {p: s for g in claim.loose_files.values() for p, s in sizes(g).items()}
    now = {p: s for shard in shards if shard.kind == "files" for p, s in sizes(shard.listing).items()}
    added = sorted(set(now) - set(then))
    gone = sorted(set(then) - set(now))
    resized = sorted(p for p in set(now) & set(then) if now[p] != then[p])
    parts = [f"{what} {len(names)}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
             for what, names in (("added", added), ("gone", gone), ("resized", resized)) if names]
    return "; ".join(parts) or f"groups {', '.join(groups[:5])}"
