"""The command-line plumbing every job shares, one floor below jobs/: the parser generated from a job's config
dataclass (flags), --config files and --print-config (config_files), main() with its one-line errors and the Ray
connection (job_main), what a job prints (console, progress), which tilescope made an output (provenance), and
where training may run on a cluster (node_roles).

May import: storage (config_files reads a --config from S3) and the standard library, yaml and ray. Never jobs/,
actors/ or xray/: a job hands these modules its config class, never the other way round.
"""
