"""Data: TFDS builders (ArrayRecord) for MSEC, SICE, LCDP, paired folders and synthetic mixed
exposure, and the grain train/eval pipelines. See docs/data.md.

Modules: ``images`` (file reading/validation), ``base`` (common builder), ``msec``, ``sice``,
``lcdp``, ``paired``, ``synthetic`` (builders), ``synthesis`` (synthetic pairs), ``build`` (CLI),
``pipeline`` (grain), ``bench`` (pipeline throughput).
"""
