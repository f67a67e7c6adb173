"""Pure rules at the bottom, with no I/O: the one user-facing error type, run ids and their selection, how runs
are cut into batches, how many events a run holds by its bytes, and how numbers and tables are shown.

May import: nothing of pipeline (spark's shared contracts only).
"""
