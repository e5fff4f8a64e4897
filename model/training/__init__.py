"""Training and evaluation runs: the run's config (`config.py`), `fit` (`fit.py`), one epoch (`epoch.py`),
checkpoints, processes (`distributed.py`), where a network runs (`runtime.py`), and the evaluation of a
network or checkpoint on a split (`evaluate.py`), which fit runs after each epoch."""
