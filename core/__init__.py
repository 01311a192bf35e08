"""The bottom layer, which every other imports and which imports none of them, nor torch:
`run_store` (the run-store layout, writers and readers), `config` (RunConfig, sweep files and
config differences), `names` (metric names, their directions and R@k), `stats` (intervals,
tests, power and the adjustment for many comparisons), `atomic` (atomic, durable writes)."""
