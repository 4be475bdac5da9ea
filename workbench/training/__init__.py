"""Training: the engines (torchvision, detectron2, two-stage), background jobs, the model registry.

Nothing here imports torch at package import time; import the submodules you need.
"""
