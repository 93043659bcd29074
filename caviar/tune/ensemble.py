"""The study's ensemble: greedy selection (Caruana et al., 2004) over every trial the study
kept, by the dev predictions of each trial's best epoch.

The notes' caviar strategy trains many models at once; this keeps what works instead of one
trial. ``StudyEnsemble.update`` reads the predictions of trials finished since its last call
and selects again (the driver calls it as trials finish, so the progress line and the dashboard
show the ensemble's dev metric beside the best trial's); ``build`` returns the ``Ensemble`` of
the selected trials' networks, with the selection counts as weights.

The ensemble's dev figures are those its selection optimized, so they flatter it; its test
figures (``caviar tune`` evaluates it once on the test set) are the honest ones.
"""

from __future__ import annotations

import time

import numpy

from ..nn import heads
from ..train import hyperparameters as H
from ..train.ensemble import DEFAULT_SIZE, Ensemble, greedy_selection
from .objective import metric_for, study_data



class StudyEnsemble:
    """The greedy ensemble of a study's kept trials (``Study.finish(model=...)``)."""

    def __init__(self, study, size=None):
        self.study = study
        settings = study.settings
        ds, _, sets = study_data(settings)
        self.y = sets["dev"][1]
        self.head = heads.get(H.output_for(ds.n_classes))
        self.metric = metric_for(settings)[0]
        self.size = int(size or settings.get("ensemble_size") or DEFAULT_SIZE)
        self.predictions = {}
        self.result = None
        self.seconds = 0.0  # the last selection's time: the driver calls ``update`` no more often than it pays

    def update(self):
        """Select again if trials finished since the last call; return the selection (or None
        while no trial is kept): members (trial numbers), counts, weights, dev_cost, the dev
        metric, and ``dev`` (every dev figure of the ensemble)."""
        new = self.study.dev_predictions(known=self.predictions)
        if not new:
            return self.result
        started = time.perf_counter()
        self.predictions.update(new)
        numbers = sorted(self.predictions)
        counts, losses = greedy_selection(numpy.stack([self.predictions[n] for n in numbers]), self.y, self.head,
                                          self.size)
        chosen = numpy.flatnonzero(counts)
        weights = counts[chosen] / counts.sum()
        p = sum(w * self.predictions[numbers[i]].astype(numpy.float64) for w, i in zip(weights, chosen))
        dev = self.head.proba_metrics(p, self.y)
        self.result = {"members": [numbers[i] for i in chosen], "counts": [int(c) for c in counts[chosen]],
                       "weights": [float(w) for w in weights], "dev_cost": losses[-1],
                       "single_dev_cost": losses[0],  # the first step: the best single trial's loss
                       self.metric: float(dev[self.head.metric]), "dev": {"cost": losses[-1], **dev},
                       "candidates": len(numbers)}
        self.seconds = time.perf_counter() - started
        self.study.set_setting("ensemble", self.result)  # for the dashboard and `caviar report`
        return self.result

    def build(self):
        """The ``Ensemble`` of the selected trials' networks, weighted by the selection; None
        while no trial is kept."""
        result = self.update()
        if result is None:
            return None
        return Ensemble([self.study.network(n) for n in result["members"]], result["weights"])
