"""Model inputs: the ``input`` config and the path from dumped features to the batches a model sees.

``config.InputConfig`` (the YAML section), ``featureset`` (frame stores, crops, segments, rows, batches),
``batch`` (normalisation statistics, noise, and ``model_batch``: rows -> model tensors).
"""
