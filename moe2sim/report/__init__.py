"""What a run reports: summary metrics from the records (summary) and the self-contained HTML
report with its figures (html)."""
