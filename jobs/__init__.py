"""The jobs a user submits, one module each (synth, train, quantize, import_model, train_tiles, score, report,
demo, submit, runs), each with a frozen config, run(cfg) -> summary and main(argv); and the stage modules a job
splits into along a real seam (score_stages, report_stages, report_page, report_tables, import_stages,
quantize_inputs, localisation), which take small typed plans and never import their job back.

Top floor of the product: may import cli, actors, storage and xray.
"""
