"""What an operator reads, as console text and as JSON holding the same figures: the dry run and its estimates,
the summary after a backfill (and what it reads back for it), the clean and verify reports.

May import: orchestration, runners, stores, configs, rules.
"""
