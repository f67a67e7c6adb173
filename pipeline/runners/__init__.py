"""Running one batch's Spark job: pyspark's spark-submit on this machine, or a step on an EMR cluster (its
requests built purely from the settings), the job code both submit, and what a run of the job returns.

May import: stores, configs, rules.
"""
