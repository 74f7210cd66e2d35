"""The suite comparison report: results tables, recommendations and plots, from the run directories.

    dialsum report runs/suites/main5     # rewrite the report from runs/suites/main5/suite_state.json
    dialsum compare RUN RUN --out DIR    # the per-dialogue page alone, for runs not in one suite
    pytest tests/test_report.py tests/test_dialogue_page.py

`write_report(out_dir, records)` (called by the suite after each experiment) reads each record's run
directory (`metrics.json`, `train_log.jsonl`, the submission) and memory CSV, and writes to `out_dir`:
`results.json`, `results.csv`, `experiment_index.csv`, `report.md`, `report.html` (converted from
report.md, plots inlined) and the plots `plot_loss.png`, `plot_dev_score.png`, `plot_final_scores.png`,
`plot_memory.png` (a plot without data is left out), and `dialogues.html`, every dev dialogue with each
finished run's summary and score (linked from the report). Missing or broken inputs never stop the report:
they show as failures or notes.

Modules, each importing only those before it: inputs (reading the files), results (derived numbers,
rows, recommendations), render (Markdown, and HTML from it), plots (figures), dialogues (the per-dialogue
page from dev rows and outputs; its style and script are this package's dialogues.css and dialogues.js),
dialogue_sources (the page's inputs read from runs, tunings and ensembles; `dialsum compare`), build
(writing it all: the entry points `write_report` and `report_suite_dir`). This package imports none of them.
"""
