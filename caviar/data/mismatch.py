"""Are two sets from the same distribution? (The notes: dev and test must be.)

A domain classifier (logistic regression) learns to tell set A from set B. If it cannot do
better than chance, its cross-validated AUC is about 0.5; an AUC well above 0.5 means the sets
differ, and the features that shift most say how (the notes' web pictures vs phone pictures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy


@dataclass
class MismatchReport:
    auc: float
    auc_std: float
    threshold: float
    features: list  # (name, standardized mean difference), largest first

    @property
    def mismatched(self) -> bool:
        return self.auc > self.threshold

    def __str__(self):
        if not self.mismatched:
            return f"same distribution: a classifier cannot tell the sets apart (AUC {self.auc:.3f})"
        top = ", ".join(f"{name} ({d:+.2f} sd)" for name, d in self.features[:3])
        return (f"WARNING: the sets look different: a classifier tells them apart with AUC {self.auc:.3f} "
                f"(> {self.threshold}); most shifted features: {top}")


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
    return MismatchReport(float(scores.mean()), float(scores.std()), threshold,
                          [(names[i], float(shift[i])) for i in order])
