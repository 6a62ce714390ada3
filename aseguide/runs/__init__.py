"""Generation runs: the configuration, batching and out-of-memory handling, the run folder, resume.

The modules are imported by their own names (``aseguide.runs.generate`` is the module
of the :func:`~aseguide.runs.generate.generate` loop); :mod:`aseguide.runs.cluster` spreads
a run over a Ray cluster.

Examples
--------
>>> from aseguide.runs.generate import GenerateConfig
>>> GenerateConfig().batch_size
16
"""
