"""Bias/variance diagnosis and the notes' basic recipe.

The notes' table (Bayes error close to 0%):

| train error | dev error | diagnosis                   |
|-------------|-----------|-----------------------------|
| 1%          | 11%       | high variance               |
| 15%         | 16%       | high bias                   |
| 15%         | 30%       | high bias and high variance |
| 0.5%        | 1%        | low bias, low variance      |

Bias is measured against human-level (or Bayes) error: avoidable bias = train - human, so with
human error 15%, a 15% train error is not high bias. Variance = dev - train.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# An avoidable bias or a variance above 2 percentage points is "high" by default: the notes'
# low cases sit at 0.5-1 point, their high cases at 10-15.
BIAS_THRESHOLD = 0.02
VARIANCE_THRESHOLD = 0.02

HIGH_BIAS_RECIPE = [
    "bigger network (more hidden units or more layers)",
    "train longer",
    "a better optimizer (Adam, momentum) or tuned hyperparameters",
    "another architecture",
]
HIGH_VARIANCE_RECIPE = [
    "more data (or data augmentation)",
    "regularization (L2, dropout)",
    "another architecture",
]


@dataclass
class Diagnosis:
    kind: str  # 'high bias', 'high variance', 'high bias and high variance', or 'fine'
    avoidable_bias: float
    variance: float
    recommendations: list = field(default_factory=list)

    @property
    def high_bias(self):
        return "bias" in self.kind

    @property
    def high_variance(self):
        return "variance" in self.kind

    def to_dict(self):
        return {"kind": self.kind, "avoidable_bias": self.avoidable_bias, "variance": self.variance,
                "recommendations": list(self.recommendations)}

    def __str__(self):
        return describe(self.to_dict())


def describe(d):
    """A diagnosis (``Diagnosis.to_dict()``) as the lines ``caviar`` prints. A gap below zero
    says what it means instead of printing a negative bias or variance."""
    bias, variance = d["avoidable_bias"], d["variance"]
    gaps = [f"avoidable bias {100 * bias:.1f} points" if bias >= 0 else
            f"training error {100 * -bias:.1f} points below the human-level error (is that estimate too high?)",
            f"variance {100 * variance:.1f} points" if variance >= 0 else
            f"dev error {100 * -variance:.1f} points below the training error: no variance problem (the dev set "
            f"may be small, or easier than the training set)"]
    lines = [f"diagnosis: {d['kind']} ({'; '.join(gaps)})"]
    lines += [f"  {i}. {r}" for i, r in enumerate(d["recommendations"], start=1)]
    return "\n".join(lines)


def _error(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be an error rate in [0, 1], got {value!r}")
    return float(value)


def diagnose(train_error, dev_error, human_error=0.0, bias_threshold=BIAS_THRESHOLD,
             variance_threshold=VARIANCE_THRESHOLD):
    """Classify bias and variance from error rates (fractions, e.g. 0.11 for 11%) and return
    the basic recipe's recommendations in order: fix high bias first, then high variance."""
    train_error = _error("train_error", train_error)
    dev_error = _error("dev_error", dev_error)
    human_error = _error("human_error", human_error)
    bias = train_error - human_error
    variance = dev_error - train_error
    high_bias = bias > bias_threshold
    high_variance = variance > variance_threshold
    if high_bias and high_variance:
        kind = "high bias and high variance"
    elif high_bias:
        kind = "high bias"
    elif high_variance:
        kind = "high variance"
    else:
        kind = "fine"
    steps = (HIGH_BIAS_RECIPE if high_bias else []) + (HIGH_VARIANCE_RECIPE if high_variance else [])
    recommendations = list(dict.fromkeys(steps))  # both problems: "another architecture" once
    return Diagnosis(kind, round(bias, 12), round(variance, 12), recommendations)
