"""flamboyance: pretraining Flamingo-style vision-language models, data pipeline first.

Subpackages (data flows one way, left to right):

    crawl -> preprocess -> pipelines (Beam) -> shards -> trainer (Ray) -> model
                                                  \\-> evaluation <-/
"""

__version__ = "0.1.0"
