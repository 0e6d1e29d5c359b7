"""A short pipeline schedule for the 8-view 64x48 tiny room (the synthetic preset is sized for the
default room): the benchmark runner's ``--fast`` schedule, quiet and on one thread (fastest for
64x48 images; one fixed thread count for the resume tests, which compare runs bitwise). Tests start from this and change only what they exercise."""

from openinsgaussian.evaluate.benchmark import FAST_OVERRIDES

TINY_PIPELINE: dict = {**FAST_OVERRIDES, "threads": 1, "progress": False}
