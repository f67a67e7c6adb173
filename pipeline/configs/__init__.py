"""The user's files and settings, validated before anything touches AWS: the storage and resolver configs
(self-describing JSON through a real Iglu resolver, with the embedded schemas in iglu_repo/), EmrEtlRunner's
config.yml, the [emr] settings and the command's parameters.

May import: rules.
"""
