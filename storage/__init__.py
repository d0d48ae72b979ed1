"""Everything that touches bytes at rest: filesystems (local, S3 through pyarrow.fs), archives (tar, tar.gz,
loose files), artifacts, the scoring run's files (claim, chunks, commit, manifest) and the files a report reads and
writes.

May import xray; never actors, cli or jobs.
"""
