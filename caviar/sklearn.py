"""scikit-learn estimators: caviar inside the pipelines people already use.

``CaviarClassifier`` and ``CaviarRegressor`` take every hyperparameter of ``caviar train``
(``caviar.train.hyperparameters.SCHEMA``'s flags, ``hidden``, ``decay``, ``epochs``,
``early_stopping``), under the same names and with the same defaults, so ``Pipeline``,
``cross_val_score``, ``GridSearchCV`` and ``clone`` work on them as on any estimator.

- ``fit(X, y, sample_weight=None)`` takes NumPy arrays (standardized with the training rows'
  mean and standard deviation, the notes' normalization) or DataFrames, and arrays of text or
  with missing cells (``caviar.data.Preprocessor``: roles, median imputation with a "was
  missing" column, one-hot categories, standardization), fitted inside ``fit``.
- Early stopping (``early_stopping`` epochs of patience, 10 by default) watches the dev cost
  on ``validation_fraction`` of the training rows (stratified for classes) and keeps the best
  epoch's weights. ``warm_start`` continues training; ``partial_fit`` trains one epoch on the
  given rows, as scikit-learn's MLP.
- ``ensemble=True`` runs caviar's population search for ``time`` seconds on the training rows
  (``caviar tune``: trials trained as populations, each keeping its best epoch) and predicts
  with the greedy ensemble of its trials, selected on the internal validation split.
- An estimator pickles (scikit-learn and joblib need it); ``save(path)`` writes a caviar model
  directory (pickle-free, read by ``caviar.load`` and ``caviar predict``) and
  ``CaviarClassifier.load(path)`` makes an estimator of one.

``EXPECTED_FAILED_CHECKS`` names the scikit-learn estimator checks that cannot pass, with the
reason; scikit-learn (1.6 and later) takes them as ``check_estimator(...,
expected_failed_checks=...)`` (``expected_failed_checks(estimator)`` returns them).
"""

from __future__ import annotations

import os
import tempfile

import numpy
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, check_random_state, validate_data

from . import data as D
from .data.prepare import balanced_class_weight
from .errors import CaviarError
from .nn import Network
from .train import EarlyStopping, Ensemble, fit, load_model, save, state_of
from .train import hyperparameters as H

# every `caviar train` flag of the schema, with the command line's defaults
_SCHEMA_ARGS = ("lr", "beta1", "batch_size", "l2", "keep_prob", "beta2", "epsilon", "activation", "optimizer", "init",
                "init_scale", "batchnorm", "l1")

EXPECTED_FAILED_CHECKS = {
    "check_class_weight_classifiers":
        "Adam's steps do not grow with the loss: at the default lr (0.001) and 40 epochs, one mini-batch of 50 "
        "noisy rows per epoch, class weights of 1000 against 0.0001 move the boundary too little for the "
        "check's 87% of class 0 (with lr=0.01 and 200 epochs it passes: tests/test_sklearn.py)",
    "check_sample_weight_equivalence_on_dense_data":
        "mini-batch training: repeating a row puts it in other mini-batches than weighting it, so the two fits "
        "differ (scikit-learn's MLP declares the same)",
}


def expected_failed_checks(estimator):
    """The checks of ``sklearn.utils.estimator_checks`` that ``estimator`` cannot pass, with why
    (the class-weight check runs on classifiers only)."""
    return {k: v for k, v in EXPECTED_FAILED_CHECKS.items()
            if k != "check_class_weight_classifiers" or isinstance(estimator, ClassifierMixin)}


class _CaviarEstimator(BaseEstimator):
    _output = None  # the head: 'softmax' or 'linear'

    def __init__(self, hidden=(64, 32), activation="relu", init="auto", init_scale=None, optimizer="adam", lr=None,
                 beta1=None, beta2=None, epsilon=None, batch_size=64, epochs=40, decay=None, l2=0.0, l1=0.0,
                 keep_prob=1.0, batchnorm=False, early_stopping=10, validation_fraction=0.1, warm_start=False,
                 random_state=None, verbose=False, ensemble=False, time=60.0, dtype="float64"):
        self.hidden = hidden
        self.activation = activation
        self.init = init
        self.init_scale = init_scale
        self.optimizer = optimizer
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.batch_size = batch_size
        self.epochs = epochs
        self.decay = decay
        self.l2 = l2
        self.l1 = l1
        self.keep_prob = keep_prob
        self.batchnorm = batchnorm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.random_state = random_state
        self.verbose = verbose
        self.ensemble = ensemble
        self.time = time
        self.dtype = dtype

    # -- scikit-learn's conventions ------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing cells are imputed with the training median
        tags.non_deterministic = False
        return tags

    def _params(self):
        """The run's settings by the schema's names, as ``caviar train`` translates its flags."""
        params = {k: getattr(self, k) for k in _SCHEMA_ARGS}
        if self.decay:
            params["schedule"] = self.decay
        return params

    def _seed(self):
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    # -- data ----------------------------------------------------------------------------------
    def _features(self, X, fitting, rows=None):
        """The network's inputs (float32) from X: its preprocessing fitted on ``rows`` of it
        when ``fitting``; applied as fitted otherwise."""
        import pandas

        if fitting:
            self._frame_input = isinstance(X, pandas.DataFrame)
        if isinstance(X, pandas.DataFrame):
            frame = X
            if fitting:
                self._remember_columns(X)
            elif X.shape[1] != self.n_features_in_ and not hasattr(self, "feature_names_in_"):
                raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                                 f"{self.n_features_in_} features as input.")
        else:
            text = _is_text(X)
            X = validate_data(self, X, reset=fitting, dtype=None if text else "numeric",
                              ensure_all_finite="allow-nan", accept_sparse=False)
            if text or numpy.isnan(X).any() or (not fitting and isinstance(self.preprocessor_, D.Preprocessor)):
                frame = pandas.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
                if not text:
                    frame = frame.astype("float64")
            else:
                frame = None
        if frame is not None:
            frame = _text_columns(frame)
            if fitting:
                self.preprocessor_ = D.Preprocessor()
                try:
                    self.preprocessor_.fit(frame, rows, source="X")
                except D.DataError as exc:
                    raise ValueError(str(exc)) from None
            if isinstance(self.preprocessor_, D.Normalizer):  # fitted on numbers, given a table now
                frame = frame.astype("float64").to_numpy()
            else:
                return self.preprocessor_.transform(frame, source="X")
        X = numpy.asarray(frame if frame is not None else X, dtype=numpy.float64)
        if fitting:
            self.preprocessor_ = D.Normalizer(per_feature=True).fit(X if rows is None else X[rows])
        return self.preprocessor_.transform(X).astype(numpy.float32)

    def _remember_columns(self, frame):
        """``n_features_in_``, and ``feature_names_in_`` where every column name is text."""
        self.n_features_in_ = frame.shape[1]
        if all(isinstance(c, str) for c in frame.columns):
            self.feature_names_in_ = numpy.asarray(frame.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _validation_rows(self, y, seed):
        """(train rows, dev rows or None) for early stopping."""
        m = len(y)
        patience = self.early_stopping
        if not patience or self.validation_fraction is None or self.validation_fraction <= 0:
            return numpy.arange(m), None
        n_dev = int(round(self.validation_fraction * m))
        if n_dev < 1 or m - n_dev < 2:
            return numpy.arange(m), None
        stratify = self._output != "linear" and numpy.bincount(y).min() >= 2
        train, dev, _ = D.split_indices(y, n_dev, 0, seed, stratify)
        return numpy.sort(train), numpy.sort(dev)

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Preprocess X (fitted on the training rows), train; returns the estimator."""
        if self.warm_start and hasattr(self, "network_") and not self.ensemble:
            return self._continue(X, y, sample_weight, self.epochs)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        raw = _column(y)
        check_consistent_length(X, raw)
        if len(raw) == 0:
            raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required")
        y = self._targets(raw, fitting=True)
        if self.ensemble:
            return self._fit_ensemble(X, raw)
        seed = self._seed()
        train, dev = self._validation_rows(y, seed)
        Xf = self._features(X, fitting=True, rows=train)
        weights = self._sample_weight(sample_weight, len(y))
        if dev is None:
            return self._train(Xf, y, weights, seed, self.epochs, bool(self.verbose))
        return self._train(Xf[train], y[train], None if weights is None else weights[train], seed, self.epochs,
                           bool(self.verbose), validation=(Xf[dev], y[dev]),
                           callbacks=[EarlyStopping(patience=int(self.early_stopping), monitor="dev_cost")])

    def _train(self, Xf, targets, weights, seed, epochs, verbose, validation=None, callbacks=()):
        """A new network for inputs ``Xf``, trained ``epochs`` epochs from ``seed``."""
        self.network_, self.ensemble_ = self._network(Xf.shape[1], seed, targets), None
        try:
            fit(self.network_, Xf, targets, optimizer=H.optimizer(self._params(), strict=True), epochs=int(epochs),
                batch_size=int(self.batch_size), schedule=H.schedule(self._params()), validation_data=validation,
                callbacks=list(callbacks), verbose=verbose, seed=seed, shuffle_seed=seed, sample_weight=weights)
        except CaviarError as exc:
            raise ValueError(str(exc)) from None
        self._record()
        return self

    def _start(self, X, targets, sample_weight):
        """``partial_fit``'s first call: the preprocessing fitted on these rows, one epoch."""
        check_consistent_length(X, targets)
        Xf = self._features(X, fitting=True)
        return self._train(Xf, targets, self._sample_weight(sample_weight, len(targets)), self._seed(), 1, False)

    def _continue(self, X, y, sample_weight, epochs):
        check_is_fitted(self)
        check_consistent_length(X, _column(y))
        y = self._targets(y, fitting=False)
        Xf = self._features(X, fitting=False)
        weights = self._sample_weight(sample_weight, len(y))
        fit(self.network_, Xf, y, epochs=int(epochs), batch_size=int(self.batch_size), verbose=bool(self.verbose),
            sample_weight=weights)
        self._record()
        return self

    def _network(self, n_x, seed, targets):
        params = self._params()
        n_y = len(self.classes_) if self._output == "softmax" else 1
        try:
            H.optimizer(params, strict=True)
            H.schedule(params)
            return Network([n_x, *[int(h) for h in self.hidden], n_y], output=self._output, seed=seed,
                           class_weight=self._class_weight(targets), dtype=self.dtype, **H.network_options(params))
        except CaviarError as exc:
            raise ValueError(str(exc)) from None

    def _class_weight(self, targets):
        return None

    @staticmethod
    def _sample_weight(sample_weight, m):
        if sample_weight is None:
            return None
        w = numpy.asarray(sample_weight, dtype=numpy.float64)
        if w.ndim == 0:
            w = numpy.full(m, float(w))
        if w.shape != (m,):
            raise ValueError(f"sample_weight.shape == {w.shape}, expected ({m},)!")
        return w

    def _record(self):
        """The fitted attributes of the network's whole training (every fit and partial fit)."""
        state = state_of(self.network_)
        self.history_ = history = state.history
        self.n_iter_ = state.epochs_trained
        self.loss_curve_ = [e["train_cost"] for e in history.epochs]
        self.best_epoch_ = history.best_epoch if history.best_epoch is not None else self.n_iter_

    def _fit_ensemble(self, X, y):
        """A population search on the training rows for ``time`` seconds; predict with the
        greedy ensemble of its trials (selected on the internal validation split)."""
        import pandas

        from .tune import tune
        from .tune.ensemble import StudyEnsemble
        from .tune.objective import study_data

        if isinstance(X, pandas.DataFrame):
            self._remember_columns(X)
            Xf_frame = _text_columns(X)
        else:  # named as ``_features`` names an array's columns, so predicting reads it alike
            X = validate_data(self, X, reset=True, dtype=None, ensure_all_finite="allow-nan")
            Xf_frame = pandas.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
        target = "__caviar_target__"
        Xf_frame[target] = y  # the labels or numbers as given: the search encodes them its own way
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "train.parquet")
            Xf_frame.to_parquet(path)
            study = tune(data=path, target=target, task="classification" if self._output == "softmax" else "regression",
                         dev=self.validation_fraction or 0.1, test=0, trials=10_000, epochs=int(self.epochs),
                         patience=int(self.early_stopping or 10), group_size=10, workers=1,
                         time_budget=float(self.time), seed=self._seed() % 100_000,
                         study=os.path.join(tmp, "study.sqlite"), log=lambda line: None)
            try:
                chosen = StudyEnsemble(study)
                self.ensemble_ = chosen.build()
                if self.ensemble_ is None:
                    raise ValueError(f"no trial finished within time={self.time} s; give it more time")
                ds, prep, _ = study_data(study.settings)
                self.preprocessor_ = prep
                if ds.target_scale is not None:
                    self._target_scale = ds.target_scale
                self.ensemble_selection_ = dict(chosen.result)
            finally:
                study.close()
        self.network_ = self.ensemble_.members[0]
        self.history_ = None
        self.n_iter_ = max(state_of(m).epochs_trained for m in self.ensemble_.members)
        self.loss_curve_, self.best_epoch_ = [], None
        return self

    # -- predicting -----------------------------------------------------------------------------
    def _model_outputs(self, X):
        """The model's probabilities (or predictions, in the network's units) for X."""
        from . import backend

        check_is_fitted(self)
        model = self.ensemble_ if getattr(self, "ensemble_", None) is not None else self.network_
        return numpy.asarray(backend.to_numpy(model.predict_proba(self._features(X, fitting=False))),
                             dtype=numpy.float64)

    # -- caviar's own model files ---------------------------------------------------------------
    def save(self, path):
        """A caviar model directory (no pickle) that ``caviar.load`` and ``caviar predict`` read."""
        check_is_fitted(self)
        extras = self._extras()
        if getattr(self, "ensemble_", None) is not None:
            return self.ensemble_.save(os.fspath(path), extras)
        self.network_.extras = extras
        return save(self.network_, os.fspath(path))

    def _extras(self):
        table = isinstance(self.preprocessor_, D.Preprocessor)
        names = getattr(self, "feature_names_in_", None)
        return {("preprocessor" if table else "normalizer"): self.preprocessor_.to_dict(),
                "class_names": None, "feature_names": self.preprocessor_.input_names if table else (
                    list(names) if names is not None else [f"x{i}" for i in range(self.n_features_in_)]),
                "target": None, "target_scale": None, "data": None,
                "sklearn": {"class": type(self).__name__, "params": _json_params(self.get_params()),
                            "frame_input": bool(getattr(self, "_frame_input", False))}}

    @classmethod
    def load(cls, path):
        """An estimator of a caviar model directory written by ``save`` (or by ``caviar train``
        for a model of the same kind)."""
        model = load_model(path)
        extras = getattr(model, "extras", {}) or {}
        info = extras.get("sklearn", {})
        est = cls(**{k: v for k, v in info.get("params", {}).items() if k in cls().get_params()})
        if "preprocessor" in extras:
            est.preprocessor_ = D.Preprocessor.from_dict(extras["preprocessor"])
        else:
            est.preprocessor_ = D.Normalizer.from_dict(extras["normalizer"])
        names = extras.get("feature_names") or []
        est.n_features_in_ = len(names) if "normalizer" in extras else len(est.preprocessor_.input_names)
        if info.get("frame_input"):
            est.feature_names_in_ = numpy.asarray(names, dtype=object)
        est._frame_input = bool(info.get("frame_input"))
        if isinstance(model, Ensemble):
            est.ensemble_, est.network_ = model, model.members[0]
        else:
            est.ensemble_, est.network_ = None, model
        est._restore(extras)
        est.history_ = state_of(est.network_).history
        est.n_iter_ = state_of(est.network_).epochs_trained
        est.loss_curve_ = [e["train_cost"] for e in est.history_.epochs]
        est.best_epoch_ = est.history_.best_epoch
        return est

    def _restore(self, extras):
        pass


def _json_params(params):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()
            if v is None or isinstance(v, (bool, int, float, str, list, tuple))}


class CaviarClassifier(ClassifierMixin, _CaviarEstimator):
    """caviar's network for classes (softmax), as a scikit-learn classifier; see the module.
    ``class_weight`` is None, 'balanced', or a dict of class label -> weight."""

    _output = "softmax"

    def __init__(self, hidden=(64, 32), activation="relu", init="auto", init_scale=None, optimizer="adam", lr=None,
                 beta1=None, beta2=None, epsilon=None, batch_size=64, epochs=40, decay=None, l2=0.0, l1=0.0,
                 keep_prob=1.0, batchnorm=False, early_stopping=10, validation_fraction=0.1, class_weight=None,
                 warm_start=False, random_state=None, verbose=False, ensemble=False, time=60.0, dtype="float64"):
        super().__init__(hidden=hidden, activation=activation, init=init, init_scale=init_scale, optimizer=optimizer,
                         lr=lr, beta1=beta1, beta2=beta2, epsilon=epsilon, batch_size=batch_size, epochs=epochs,
                         decay=decay, l2=l2, l1=l1, keep_prob=keep_prob, batchnorm=batchnorm,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         warm_start=warm_start, random_state=random_state, verbose=verbose, ensemble=ensemble,
                         time=time, dtype=dtype)
        self.class_weight = class_weight

    def _targets(self, y, fitting):
        y = _column(y)
        if y.dtype.kind == "f" and not numpy.isfinite(y).all():
            raise ValueError("Input y contains NaN." if numpy.isnan(y).any() else "Input y contains infinity.")
        check_classification_targets(y)
        if fitting:
            self.classes_, codes = numpy.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs examples of at least 2 classes; got 1 class")
            return codes.astype(numpy.int64)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        unknown = sorted({str(v) for v in y.tolist() if v not in index})
        if unknown:
            raise ValueError(f"y holds classes the estimator was not fitted with: {', '.join(unknown[:5])}")
        return numpy.asarray([index[v] for v in y.tolist()], dtype=numpy.int64)

    def _class_weight(self, targets):
        """One weight per class: 'balanced' from the class counts of ``targets`` (the rows the
        network trains on, as ``caviar train`` counts its training split), or a dict's."""
        cw = self.class_weight
        if cw is None:
            return None
        if cw == "balanced":
            return balanced_class_weight(targets, len(self.classes_))
        return [float(cw.get(c, 1.0)) for c in self.classes_.tolist()]

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on X and y, continuing the network (created on the first call, which
        needs ``classes``: every label the estimator will see)."""
        if not hasattr(self, "network_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            self.classes_ = numpy.unique(numpy.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"{type(self).__name__} needs at least 2 classes; got 1 class")
            return self._start(X, self._targets(y, fitting=False), sample_weight)
        if classes is not None and not numpy.array_equal(numpy.unique(numpy.asarray(classes)), self.classes_):
            raise ValueError(f"classes {list(classes)} differ from the first call's {self.classes_.tolist()}")
        return self._continue(X, y, sample_weight, 1)

    def predict_proba(self, X):
        """Class probabilities (n, n_classes), columns in the order of ``classes_``."""
        return self._model_outputs(X)

    def predict_log_proba(self, X):
        with numpy.errstate(divide="ignore"):
            return numpy.log(self.predict_proba(X))

    def decision_function(self, X):
        """The log-odds of each class against the mean (n, n_classes); for two classes, the
        log-odds of the second class (n,), which ranks examples as its probability does."""
        logp = numpy.log(numpy.clip(self.predict_proba(X), 1e-300, 1))
        if len(self.classes_) == 2:
            return logp[:, 1] - logp[:, 0]
        return logp - logp.mean(axis=1, keepdims=True)

    def predict(self, X):
        """The most probable class of each row, as the labels ``fit`` saw."""
        check_is_fitted(self)
        return self.classes_[numpy.argmax(self.predict_proba(X), axis=1)]

    def _extras(self):
        extras = super()._extras()
        extras["class_names"] = [str(c) for c in self.classes_.tolist()]
        extras["sklearn"]["classes"] = self.classes_.tolist()
        return extras

    def _restore(self, extras):
        self.classes_ = numpy.asarray(extras.get("sklearn", {}).get("classes", extras.get("class_names")))


class CaviarRegressor(RegressorMixin, _CaviarEstimator):
    """caviar's network for numbers (a linear output, mean squared error), as a scikit-learn
    regressor; the target is standardized with the training rows' mean and standard
    deviation inside the model and predictions come back in its units."""

    _output = "linear"

    def _targets(self, y, fitting):
        y = _column(y)
        if y.dtype.kind == "c":
            raise ValueError("Complex data not supported: a regression target needs real numbers")
        y = y.astype(numpy.float64)
        if not numpy.isfinite(y).all():
            raise ValueError("y holds NaN or infinity; a regression target needs finite numbers")
        if fitting:
            mean, std = float(y.mean()), float(y.std()) or 1.0
            self._target_scale = (mean, std)
        mean, std = self._target_scale
        return (y - mean) / std

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on X and y, continuing the network (created on the first call)."""
        if not hasattr(self, "network_"):
            return self._start(X, self._targets(y, fitting=True), sample_weight)
        return self._continue(X, y, sample_weight, 1)

    def predict(self, X):
        """Predictions (n,) in the target's own units."""
        check_is_fitted(self)
        mean, std = self._target_scale
        return self._model_outputs(X)[:, 0] * std + mean

    def _extras(self):
        extras = super()._extras()
        extras["target_scale"] = list(self._target_scale)
        return extras

    def _restore(self, extras):
        self._target_scale = tuple(extras.get("target_scale") or (0.0, 1.0))


def _text_columns(frame):
    """``frame`` with every column name as text (the preprocessing's names), its data shared."""
    return frame.set_axis([str(c) for c in frame.columns], axis=1)


def _is_text(X):
    """True for an array of text (which the table preprocessing reads); an array of numbers
    stored as objects is numbers."""
    if hasattr(X, "toarray") or not hasattr(X, "dtype") and not isinstance(X, (list, tuple)):
        return False
    array = numpy.asarray(X)
    if array.dtype.kind not in "OUS":
        return False
    try:
        array.astype(numpy.float64)
    except ValueError:  # text such as 'Paris'
        return True
    # a TypeError (a dict in a cell: neither text nor a number) goes to the caller, as NumPy words it
    return False


def _column(y):
    """y as a 1-D array (a column vector is accepted, as scikit-learn does, with its warning)."""
    import warnings

    from sklearn.exceptions import DataConversionWarning

    y = numpy.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is raveled",
                      DataConversionWarning, stacklevel=3)
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    return y
