"""A scoring run's `_manifest.json`, typed: the commit marker `tilescope score` writes last, and what the report,
the localisation check and a rerun read back.

Versioned by `results_schema_version` (storage/results.py: the rows and the run directory change together). A
manifest from a newer tilescope is refused naming both versions; one from an older tilescope reads with the keys
it lacks as None (or empty). Keys on disk are the field names; `to_json` writes every field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from storage.fs import Location, read_json, write_json
from storage.results import RESULTS_SCHEMA_VERSION, RUN_MANIFEST, count_precisions

REQUIRED = ("run_id", "rows", "ok", "errors")
"""What every version of the manifest has held: a committed run's counts and id."""


@dataclass(frozen=True)
class RunManifest:
    run_id: str
    """The run's id (score --run-id, or derived from the archive, model and settings)."""
    rows: int
    """Result rows committed: one per input image, ok or error."""
    ok: int
    errors: int
    files: int | None = None
    """part-*.parquet files after compaction."""
    error_reasons: Mapping[str, int] = field(default_factory=dict)
    """The most frequent error reasons and their counts."""
    missing_from_archive: int | None = None
    """Images the metadata lists that no shard holds; None without metadata."""
    scored_this_attempt: int | None = None
    seconds_this_attempt: float | None = None
    pipeline_seconds_this_attempt: float | None = None
    images_per_s: float | None = None
    cost: Mapping[str, Any] = field(default_factory=dict)
    """Per-image core-ms by stage (jobs/score_stages.py, ScoringCost.record)."""
    model: str | None = None
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    precision: str | None = None
    """What ran, as the rows record it (several joined by '/' when nodes differed)."""
    requested_precision: str | None = None
    ran: tuple[Mapping[str, Any], ...] = ()
    """Every (precision, cpu_isa) pair that ran, with its rows."""
    labels: tuple[str, ...] = ()
    shards: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    """The score config that produced the run (replayable with --config)."""
    versions: Mapping[str, str] = field(default_factory=dict)
    results_schema_version: int = RESULTS_SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = [dict(v) if isinstance(v, Mapping) else v for v in value]
            body[f.name] = value
        return body

    @classmethod
    def from_json(cls, body: Any, source: str) -> RunManifest:
        """Parse a `_manifest.json` body; ValueError naming `source` and the key at fault."""
        if not isinstance(body, Mapping):
            raise ValueError(f"{source}: not a run manifest (a JSON object was expected)")
        version = body.get("results_schema_version", 1)
        if not isinstance(version, int) or version > RESULTS_SCHEMA_VERSION:
            raise ValueError(f"{source}: results_schema_version {str(version)[:40]} is newer than this tilescope "
                             f"reads ({RESULTS_SCHEMA_VERSION}); upgrade tilescope")
        missing = [key for key in REQUIRED if key not in body]
        if missing:
            raise ValueError(f"{source}: not a committed run manifest (missing {', '.join(missing)})")
        for key in ("rows", "ok", "errors"):
            if not isinstance(body[key], int) or isinstance(body[key], bool):
                raise ValueError(f"{source}: {key} must be an integer, got {str(body[key])[:40]!r}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in body.items() if key in known}
        for key in ("ran", "labels", "shards"):
            if key in values:
                values[key] = tuple(values[key] or ())
        for key in ("error_reasons", "cost", "config", "versions"):
            if key in values and values[key] is None:
                values[key] = {}
        values["results_schema_version"] = version
        return cls(**values)


def read_manifest(run: Location) -> RunManifest | None:
    """The run's committed manifest, or None while it is not committed."""
    body = read_json(run, RUN_MANIFEST)
    return None if body is None else RunManifest.from_json(body, run.join(RUN_MANIFEST).uri)


def write_manifest(run: Location, manifest: RunManifest) -> None:
    """Commit the run: `_manifest.json` written atomically, after every row (the commit marker)."""
    write_json(run, RUN_MANIFEST, manifest.to_json())


def ran_record(run: Location, requested: str) -> dict[str, Any]:
    """What ran, as the run's rows record it: `precision` (one label, or several joined by '/' when nodes
    differed), the precision asked for, and every (precision, cpu_isa) pair with its rows."""
    ran = count_precisions(run)
    return {"precision": "/".join(dict.fromkeys(r["precision"] for r in ran)) or requested,
            "requested_precision": requested, "ran": tuple(ran)}
