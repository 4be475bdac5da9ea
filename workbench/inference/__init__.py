"""Inference: load a trained run as a predictor, predict over images, folders and videos."""
