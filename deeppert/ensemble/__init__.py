"""The ensemble step: latent variables of many model runs -> stable gene programs.

- ``config``: :class:`EnsembleConfig`, every knob of the step (numpy-free, so ``--help`` stays light).
- ``modes``: the two modes, consensus (rotate each run, density filter, cluster, choose L) and
  the GMeans reference; :class:`Ensemble`, :func:`build_ensemble`, :class:`EnsembleModel`.
- ``stability``: split-half stability, the warnings and :func:`ensemble_step`, the whole step.
- ``baselines``: PCA, FastICA and NMF programs of the same matrix, compared with the ensemble.
- ``outputs`` and ``figures``: the one writer of ``RUN_DIR/ensemble/`` and its figures.

This file imports nothing, so importing the light ``config`` does not load the heavy modes.
"""
