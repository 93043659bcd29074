"""Are two sets from the same distribution? (The notes: dev and test must be.)

A domain classifier (logistic regression) learns to tell set A from set B. If it cannot do
better than chance, its cross-validated AUC is about 0.5; an AUC well above 0.5 means the sets
differ, and the features that shift most say how (the notes' web pictures vs phone pictures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy


# Below this many examples in either set the check is not run: an AUC from a few dozen rows
# swings far both ways (0.13 on two sets of 30 from one distribution), noise rather than a finding.
MIN_EXAMPLES = 50


@dataclass
class MismatchReport:
    auc: float
    auc_std: float
    threshold: float
    features: list  # (name, standardized mean difference), largest first
    low: float = 0.0  # the AUC's 95% interval (Hanley and McNeil, 1982)
    high: float = 1.0

    @property
    def mismatched(self) -> bool:
        """Told apart: an AUC above the threshold whose whole 95% interval is above chance."""
        return self.auc > self.threshold and self.low > 0.5

    def __str__(self):
        interval = f"AUC {self.auc:.3f}, 95% interval {self.low:.2f} to {self.high:.2f}"
        if not self.mismatched:
            # on sets of 60 from one distribution, 40 draws gave cross-validated AUCs from 0.27 to
            # 0.63 around a mean of 0.51 (tests/test_newcomer.py): below chance is scatter, not a finding
            below = ("; below chance is no difference either: on this few examples the AUC scatters on both "
                     "sides of 0.5" if self.high < 0.5 else "")
            return f"same distribution: a classifier cannot tell the sets apart ({interval}; 0.5 is chance{below})"
        top = ", ".join(f"{name} ({d:+.2f} sd)" for name, d in self.features[:3])
        return (f"WARNING: the sets look different: a classifier tells them apart ({interval}, above "
                f"{self.threshold}); most shifted features: {top}")


def auc_interval(auc, n_a, n_b):
    """The 95% interval of an AUC from ``n_a`` and ``n_b`` examples (Hanley and McNeil, 1982)."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_a - 1) * (q1 - auc * auc) + (n_b - 1) * (q2 - auc * auc)) / (n_a * n_b)
    half = 1.96 * float(numpy.sqrt(max(var, 0.0)))
    return max(0.0, auc - half), min(1.0, auc + half)


def check_same_distribution(A, B, feature_names=None, threshold=0.6, folds=5, seed=0, max_examples=20000):
    """Cross-validated AUC of a logistic regression separating A from B, and the most shifted
    features by standardized mean difference (mean_B - mean_A) / pooled sd.

    Each set is subsampled to ``max_examples`` rows to keep the check fast on big data.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    A, B = numpy.asarray(A, dtype=numpy.float64), numpy.asarray(B, dtype=numpy.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"both sets need the same features, got shapes {A.shape} and {B.shape}")
    rng = numpy.random.default_rng(seed)
    if len(A) > max_examples:
        A = A[rng.choice(len(A), max_examples, replace=False)]
    if len(B) > max_examples:
        B = B[rng.choice(len(B), max_examples, replace=False)]
    folds = min(folds, len(A), len(B))
    if folds < 2:
        raise ValueError(f"each set needs at least 2 examples to compare, got {len(A)} and {len(B)}")
    X = numpy.vstack([A, B])
    d = numpy.concatenate([numpy.zeros(len(A)), numpy.ones(len(B))])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(model, X, d, cv=cv, scoring="roc_auc")
    pooled = numpy.sqrt((A.var(axis=0) + B.var(axis=0)) / 2)
    shift = numpy.where(pooled > 0, (B.mean(axis=0) - A.mean(axis=0)) / numpy.where(pooled > 0, pooled, 1), 0.0)
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(X.shape[1])]
    order = numpy.argsort(-numpy.abs(shift), kind="stable")
    auc = float(scores.mean())
    low, high = auc_interval(auc, len(A), len(B))
    return MismatchReport(auc, float(scores.std()), threshold, [(names[i], float(shift[i])) for i in order], low, high)
