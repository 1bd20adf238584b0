"""Benchmark grids and reports: ``fedloom bench GRID`` runs base config × axes × seeds in parallel worker
processes, one hash-named run folder per resolved config; ``fedloom report RUNS_DIR`` turns the completed run
folders into a leaderboard (Markdown, self-contained HTML, CSV). See docs/bench.md."""
