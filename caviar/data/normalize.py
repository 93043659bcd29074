"""Input normalization: subtract the training mean, divide by the training standard deviation.

Correction to the notes: they compute sigma^2 = 1/m sum x^2 (after centering) and then write
``X /= sigma^2``, dividing by the *variance*. That leaves features with variance 1/sigma^2, not
1; caviar divides by the standard deviation sigma, so every feature ends with mean 0 and
variance 1 on the training set.
"""

from __future__ import annotations

import numpy


class Normalizer:
    """Fit on the training set only; apply the same shift and scale to dev, test and new data.

    ``per_feature=True`` (the notes' way) gives every feature its own mean and standard
    deviation. For images, ``per_feature=False`` uses one mean and one standard deviation over
    all pixels: a border pixel that is almost always blank would otherwise get a tiny standard
    deviation, and an augmented (shifted, rotated) image that inks it would feed the network
    values in the hundreds.

    A constant feature (standard deviation 0) is centred and left unscaled instead of divided
    by zero. Learned state: ``mean_`` and ``std_`` (one entry per feature either way).
    """

    def __init__(self, per_feature=True):
        self.per_feature = bool(per_feature)

    def fit(self, X):
        X = numpy.asarray(X, dtype=numpy.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"Normalizer.fit needs a non-empty (m, n_x) array, got shape {X.shape}")
        if self.per_feature:
            self.mean_, std = X.mean(axis=0), X.std(axis=0)
        else:
            self.mean_, std = numpy.full(X.shape[1], X.mean()), numpy.full(X.shape[1], X.std())
        self.std_ = numpy.where(std > 1e-12 * numpy.maximum(1.0, numpy.abs(self.mean_)), std, 1.0)
        return self

    def _check(self, X):
        if not hasattr(self, "mean_"):
            raise ValueError("this Normalizer is not fitted yet; call fit(X_train) first")
        X = numpy.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.mean_):
            raise ValueError(f"the Normalizer was fitted on {len(self.mean_)} features, got shape {X.shape}")
        return X

    def transform(self, X):
        X = self._check(X)
        return ((X - self.mean_) / self.std_).astype(X.dtype if X.dtype.kind == "f" else numpy.float64)

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        Z = self._check(Z)
        return (Z * self.std_ + self.mean_).astype(Z.dtype)

    def to_dict(self):
        return {"mean": self.mean_.tolist(), "std": self.std_.tolist(), "per_feature": self.per_feature}

    @classmethod
    def from_dict(cls, d):
        n = cls(d.get("per_feature", True))
        n.mean_ = numpy.asarray(d["mean"], dtype=numpy.float64)
        n.std_ = numpy.asarray(d["std"], dtype=numpy.float64)
        return n
