"""Evaluation: COCO reports of a run on a dataset, their plots, FiftyOne error analysis."""
