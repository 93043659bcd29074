"""One head per output kind: what the last layer's logits Z[L] mean.

A head owns everything that depends on the output kind: which labels it accepts, its loss
(the data term of J), probabilities, predictions, metrics, and the cost of averaged
probabilities (an ensemble's). Network, Population, ensembles, the workflow and the search
look the head up once (``HEADS[output]``) instead of switching on the output's name.

Logits are ``(m, n_y)`` for one network or ``(K, m, n_y)`` for a population; metrics reduce
the examples and outputs and keep any leading member axis.
"""

from __future__ import annotations

import numpy

from .. import backend, kernels
from .. import functional as F
from ..autodiff import Tensor

EPS = 1e-12  # averaged probabilities can be exactly 0 for a confident wrong member


def _labels_array(y):
    return y.data if isinstance(y, Tensor) else backend.xp.asarray(y)


def _values(y, n_y, what):
    if y.size != len(y) * n_y:
        raise ValueError(f"{what} need {n_y} value(s) per example, got shape {y.shape}")
    return y


def _binary(score, predicted, truth):
    """Two-class figures over the last axis (a member axis may lead): ROC AUC from the score's
    ranks (ties averaged, as scikit-learn's ``roc_auc_score``), F1 of class 1, and balanced
    accuracy (the mean of the two recalls). On the host: a few passes over the dev set."""
    from scipy.stats import rankdata

    score, predicted = backend.to_numpy(score), backend.to_numpy(predicted).astype(bool)
    truth = numpy.broadcast_to(backend.to_numpy(truth).astype(bool), score.shape)
    positives, negatives = truth.sum(axis=-1), (~truth).sum(axis=-1)
    ranks = rankdata(score, axis=-1)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        auc = ((ranks * truth).sum(axis=-1) - positives * (positives + 1) / 2) / (positives * negatives)
        tp = (predicted & truth).sum(axis=-1)
        f1 = 2 * tp / (predicted.sum(axis=-1) + positives)
        balanced = (tp / positives + (~predicted & ~truth).sum(axis=-1) / negatives) / 2
    out = {"roc_auc": auc, "f1": numpy.nan_to_num(f1), "balanced_accuracy": balanced}
    return {k: float(v) if numpy.ndim(v) == 0 else v for k, v in out.items()}


def _mean_rows(a):
    """Mean over the examples and outputs, keeping a member axis; a float for one network."""
    out = a.mean(axis=(-2, -1))
    return float(out) if out.ndim == 0 else out


_inverses = {}


def _inverse(dtype, m):
    """1/m as a 0-d array of ``dtype``, divided in that dtype (as ``ones((), dtype) / m`` is):
    the factor the mean's backward gives every example; made once per (dtype, m)."""
    found = _inverses.get((dtype, m))
    if found is None:
        if len(_inverses) >= 64:
            _inverses.clear()
        found = _inverses[(dtype, m)] = numpy.ones((), dtype=dtype) / m
    return found


class Head:
    name = ""
    metric = ""  # the figure the search ranks by and training logs per mini-batch
    higher_is_better = True
    classifies = True  # predictions are classes (with class probabilities)

    def check_n_y(self, n_y):
        pass

    def check_target(self, n_classes):
        """Refuse a target this head cannot learn (``n_classes`` None: numeric)."""
        if n_classes is None:
            raise ValueError(f"output {self.name!r} needs class labels, but the target is numeric; use output 'linear'")

    def n_y(self, n_classes):
        """Output units for a target of ``n_classes`` classes."""
        return 1

    def check_y(self, y, n_y, m=None):
        """Labels validated against an output of ``n_y`` units, as an array."""
        y = _labels_array(y)
        if m is not None and len(y) != m:
            raise ValueError(f"X has {m} examples but y has {len(y)}")
        return self._check(y, n_y)

    def member_losses(self, logits, y, weights=None):
        """Each member's mean loss (K,) for population logits (K, m, n_y); ``weights`` (m,)
        weigh the examples (class weights)."""
        m = logits.shape[1]
        target = backend.get_array_module(y).broadcast_to(y.reshape(m, -1), logits.shape)
        losses = self._loss_fn(logits, target, reduction="none")
        if weights is not None:
            losses = losses * weights.astype(losses.dtype, copy=False).reshape(m, 1)
        return losses.mean(axis=(-2, -1))

    def member_loss_grads(self, z, y, weights=None):
        """Each member's mean loss (K,) and dZ[L] (the gradient of their sum) for population
        logits ``z`` (K, m, n_y) as arrays: what backprop of ``member_losses`` gives (a
        population's tape-free step)."""
        logits = Tensor(z, requires_grad=True)
        losses = self.member_losses(logits, y, weights)
        losses.sum().backward()
        return losses.data, logits.grad

    def loss(self, logits, y, weights=None):
        """The data term of J: the mean loss over the examples, without regularization;
        ``weights`` (m,) weigh the examples (class weights), as scikit-learn's sample weights."""
        if weights is None:
            return self._loss_fn(logits, y)
        losses = self._loss_fn(logits, y, reduction="none")
        return (losses * weights.astype(losses.dtype, copy=False).reshape((-1,) + (1,) * (losses.ndim - 1))).mean()

    def example_weights(self, y, class_weight):
        """Each example's weight: its class's (``class_weight``, one per class)."""
        xp = backend.get_array_module(y)
        return xp.asarray(class_weight, dtype=numpy.float64)[self.class_of(y)]

    def class_of(self, y):  # pragma: no cover - regression heads have no classes
        raise ValueError(f"class weights need classes; output {self.name!r} has none")

    def primary(self, z, y):
        """The head's own metric alone (what training records per mini-batch)."""
        return self.metrics(z, y)[self.metric]

    def class_proba(self, p):
        """One probability column per class (None for regression)."""
        return p

    def proba_metrics(self, p, y):
        """The metrics of probabilities (an ensemble's average): the hardmax of softmax
        probabilities is that of their logits, and a linear head's outputs are its predictions."""
        return self.metrics(p, y)

    def proba_cost(self, p, y):
        """The loss of probabilities (m, n_y) (an ensemble's average): log loss, or the MSE of a
        linear head's predictions."""
        return float(self.proba_costs(p[None], y)[0])

    def proba_costs(self, P, y):
        """``proba_cost`` of each of a stack of probabilities (n, m, n_y), as an array (n,)."""
        Q, costs = self.proba_cost_terms(P, y)
        return costs(Q)

    def proba_cost_terms(self, P, y):  # pragma: no cover - every head defines it
        """(Q, costs): the entries of a stack P that ``proba_costs`` reads (all of them, or
        fewer), and the function that gives the costs (n,) from them. Q is taken elementwise
        from P, so the average of candidates' Q is the same numbers taken from the average of
        their P: greedy selection averages Q (softmax's true-class column: 1/n_y of P)."""
        raise NotImplementedError


class Softmax(Head):
    """n_y >= 2 classes; labels are class indices (m,) or one-hot / soft targets (m, n_y)."""

    name, metric = "softmax", "accuracy"
    _loss_fn = staticmethod(F.softmax_cross_entropy)

    def check_n_y(self, n_y):
        if n_y < 2:
            raise ValueError(f"a softmax output needs n_y >= 2 classes, got n_y = {n_y}; use output='sigmoid' for two classes with n_y = 1")

    def check_target(self, n_classes):
        super().check_target(n_classes)
        if n_classes < 2:
            raise ValueError("the target has a single class: there is nothing to learn")

    def n_y(self, n_classes):
        return n_classes

    def _check(self, y, n_y):
        xp = backend.get_array_module(y)
        if y.ndim == 2 and y.shape[1] == n_y and y.dtype.kind == "f":
            return y  # one-hot or soft targets
        if y.ndim != 1:
            raise ValueError(f"softmax labels must be class indices of shape (m,) or one-hot of shape (m, {n_y}), got {y.shape}")
        if y.dtype.kind == "f" and not bool((y == xp.round(y)).all()):
            raise ValueError("softmax labels must be whole class indices")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= n_y):
            bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
            raise ValueError(f"label {bad} is outside the classes 0..{n_y - 1} the network was built for (n_y = {n_y})")
        return y.astype(xp.int64, copy=False)

    def member_losses(self, logits, y, weights=None):
        labels = backend.get_array_module(y).broadcast_to(y, (logits.shape[0],) + y.shape)
        losses = F.softmax_cross_entropy(logits, labels, reduction="none")
        return (losses if weights is None else losses * weights.astype(losses.dtype, copy=False)).mean(axis=-1)

    def member_loss_grads(self, z, y, weights=None):
        """With class indices and no weights, the tape's numbers without the tape: each
        member's mean of the examples' losses, and (Yhat - Y) times the 1/m that the mean's
        backward gives every example (rounded in z's dtype, as the tape rounds it)."""
        if weights is not None or y.ndim != 1 or y.dtype.kind not in "iu" or z.ndim != 3:
            return super().member_loss_grads(z, y, weights)
        losses, dz = F.class_cross_entropy_data(z, F.class_indices(y, z.shape[-1]), True)  # y broadcasts over members
        m = z.shape[1]
        if isinstance(z, numpy.ndarray) and z.dtype in (numpy.float32, numpy.float64):
            # the mean's own steps, without its checks (a step's hot path): the same bits
            dz *= _inverse(z.dtype, m)
            sums = numpy.add.reduce(losses, axis=-1)
            return numpy.true_divide(sums, numpy.intp(m), out=sums, casting="unsafe"), dz
        dz *= backend.get_array_module(z).ones((), dtype=z.dtype) / m
        return losses.mean(axis=-1), dz

    def class_of(self, y):
        return self._classes(y)

    def proba(self, z):
        return F.softmax(Tensor(z)).data

    def predict(self, z):
        return z.argmax(axis=-1)

    @staticmethod
    def _classes(y):
        return y.argmax(axis=-1) if y.ndim == 2 else y

    def metrics(self, z, y):
        """Accuracy, and for two classes ROC AUC, F1 and balanced accuracy (class 1 positive)."""
        out = {"accuracy": self.primary(z, y)}
        if z.shape[-1] == 2:  # the score z1 - z0 ranks examples as p(class 1) does
            out.update(_binary(z[..., 1] - z[..., 0], z.argmax(axis=-1), self._classes(y)))
        return out

    def primary(self, z, y):
        labels = self._classes(y)
        if z.ndim <= 3 and kernels.usable(z, min_size=kernels.LOGITS_MIN_SIZE):  # one pass: argmax, compare, count
            z3 = kernels.stacked(z)
            counts = numpy.empty((len(z3), 1), dtype=numpy.float64)
            labels = numpy.asarray(labels).reshape(-1, z3.shape[1])  # (1, m): every member's labels
            if len(labels) not in (1, len(z3)):
                labels = numpy.broadcast_to(labels, z3.shape[:2])  # raises for labels of another shape
            kernels.run("hits", z3, labels, counts)
            hits = counts[:, 0] / z.shape[-2]  # a mean of bools: the count over m, in float64
            return float(hits[0]) if z.ndim == 2 else hits
        hits = (z.argmax(axis=-1) == labels).mean(axis=-1)
        return float(hits) if hits.ndim == 0 else hits

    def proba_cost_terms(self, P, y):  # log loss reads each example's true class
        labels = numpy.asarray(self._classes(y)).reshape(1, -1, 1)
        picked = numpy.take_along_axis(P, numpy.broadcast_to(labels, P.shape[:2] + (1,)), axis=-1)
        return picked, lambda Q: -numpy.log(numpy.clip(Q, EPS, 1)).mean(axis=(-2, -1))


class Sigmoid(Head):
    """One unit per binary label (n_y = 1 for two classes, more for multi-label); labels in [0, 1]."""

    name, metric = "sigmoid", "accuracy"
    _loss_fn = staticmethod(F.sigmoid_cross_entropy)

    def check_target(self, n_classes):
        super().check_target(n_classes)
        if n_classes != 2:
            raise ValueError(f"output 'sigmoid' needs two classes, the data has {n_classes}")

    def _check(self, y, n_y):
        _values(y, n_y, "sigmoid labels")
        if y.size and (float(y.min()) < 0 or float(y.max()) > 1):
            bad = float(y.min()) if float(y.min()) < 0 else float(y.max())
            raise ValueError(f"label {bad:g} is outside [0, 1] for a sigmoid output")
        return y

    def proba(self, z):
        return F.sigmoid_data(z)

    def class_of(self, y):
        if y.ndim == 2 and y.shape[1] != 1:
            raise ValueError("class weights need one sigmoid output (two classes), not several labels")
        return (y.reshape(-1) > 0.5).astype(numpy.int64)

    def predict(self, z):
        labels = (z > 0).astype(backend.get_array_module(z).int64)  # sigmoid(z) > 0.5 exactly when z > 0
        return labels[..., 0] if z.shape[-1] == 1 else labels

    def metrics(self, z, y):
        """Accuracy, and for one output (two classes) ROC AUC, F1 and balanced accuracy."""
        out = {"accuracy": self.primary(z, y)}
        if z.shape[-1] == 1:
            out.update(_binary(z[..., 0], z[..., 0] > 0, y.reshape(-1) > 0.5))
        return out

    def primary(self, z, y):
        return _mean_rows((z > 0) == (y.reshape(z.shape[-2:]) > 0.5))

    def class_proba(self, p):
        return numpy.hstack([1 - p, p]) if p.shape[-1] == 1 else p

    def proba_metrics(self, p, y):
        return self.metrics(p - 0.5, y)  # p > 0.5 exactly where the logit is > 0

    def proba_cost_terms(self, P, y):
        t = y.reshape(P.shape[-2:])

        def costs(Q):
            pc = numpy.clip(Q, EPS, 1 - EPS)
            return -(t * numpy.log(pc) + (1 - t) * numpy.log(1 - pc)).mean(axis=(-2, -1))

        return P, costs


class Linear(Head):
    """Regression: the outputs are the predictions; the loss is the mean squared error.

    Metrics: MSE, RMSE, MAE and R² (1 - SS_res / SS_tot per output, averaged over outputs, as
    scikit-learn's ``r2_score``; a constant target scores 1 when predicted exactly, else 0).
    """

    name, metric, higher_is_better, classifies = "linear", "mse", False, False
    _loss_fn = staticmethod(F.mean_squared_error)

    def check_target(self, n_classes):
        if n_classes is not None:
            raise ValueError("output 'linear' needs a numeric target, but the target holds classes")

    def _check(self, y, n_y):
        return _values(y, n_y, "regression targets")

    def proba(self, z):
        return z

    def class_proba(self, p):
        return None

    def predict(self, z):
        return z[..., 0] if z.shape[-1] == 1 else z

    def metrics(self, z, y):
        xp = backend.get_array_module(z)
        t = y.reshape(z.shape[-2:]).astype(z.dtype, copy=False)
        err = z - t
        sq = err * err
        mse = sq.mean(axis=(-2, -1))
        ss_res = sq.sum(axis=-2)
        ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            r2 = xp.where(ss_tot > 0, 1 - ss_res / xp.where(ss_tot > 0, ss_tot, 1), xp.where(ss_res > 0, 0.0, 1.0))
        out = {"mse": mse, "rmse": xp.sqrt(mse), "mae": xp.abs(err).mean(axis=(-2, -1)), "r2": r2.mean(axis=-1)}
        return {k: float(v) if v.ndim == 0 else v for k, v in out.items()}

    def primary(self, z, y):
        err = z - y.reshape(z.shape[-2:]).astype(z.dtype, copy=False)
        return _mean_rows(err * err)

    def proba_cost_terms(self, P, y):
        t = y.reshape(P.shape[-2:])
        return P, lambda Q: ((Q - t) ** 2).mean(axis=(-2, -1))


HEADS = {head.name: head for head in (Softmax(), Sigmoid(), Linear())}



def get(output):
    if output not in HEADS:
        raise ValueError(f"unknown output {output!r}; expected one of {', '.join(HEADS)}")
    return HEADS[output]
