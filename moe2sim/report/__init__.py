"""Every statistic and every file a run writes: summaries and intervals from records of any source, the
sweep, live and compare tables, the pages (pages/), the output contract (outputs) and `publish`, the one
way each command writes its results."""
