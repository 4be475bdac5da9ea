"""Training: torchvision (default) and detectron2 engines, background jobs, the model registry.

* ``predict.load_predictor(run)`` runs a trained model (used by evaluation, FiftyOne, the demo);
* ``jobs.start_job(config)`` trains in a background process recorded in the workspace's SQLite DB;
* ``loop.main(config)`` is the training loop itself (torchvision references style);
* ``registry`` lays out ``models/<run>/`` and ``models/latest``.

Nothing here imports torch at package import time; import the submodules you need.
"""
