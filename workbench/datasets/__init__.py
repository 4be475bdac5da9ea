"""Datasets: the dataset list (catalog), the index cache, thumbnails, health, versions, convert."""
