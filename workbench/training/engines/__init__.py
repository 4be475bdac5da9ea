"""The training engines: torchvision (default), detectron2 and the two-stage face-then-classify."""
