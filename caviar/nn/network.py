"""``Network``: an L-layer fully-connected network built from layer sizes, as in the notes.

``Network([n_x, 20, 7, 5, n_y])`` stacks, for each hidden layer, Dense -> [BatchNorm] ->
activation -> [Dropout], then a Dense output layer whose logits Z[L] feed the cost directly
("forward propagation stops at Z[L]"): softmax cross-entropy, sigmoid cross-entropy, or mean
squared error for a linear output.
"""

from __future__ import annotations

import numbers

import numpy

from .. import backend
from .. import functional as F
from ..autodiff import Tensor, no_grad
from . import heads
from . import init as initializers
from .layers import Activation, BatchNorm, Dense, Dropout

OUTPUTS = tuple(heads.HEADS)
EVAL_CHUNK = 8192  # rows per forward pass when evaluating, to bound memory


def _check_sizes(layer_sizes):
    sizes = list(layer_sizes) if isinstance(layer_sizes, (list, tuple)) else None
    if not sizes or len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least [n_x, n_y], got {layer_sizes!r}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"layer sizes must be positive integers, got {n!r} in {sizes}")
    return [int(n) for n in sizes]


def check_class_weight(class_weight, head, n_y):
    """A list of one positive weight per class, or None."""
    if class_weight is None:
        return None
    weights = [float(w) for w in class_weight]
    n_classes = max(n_y, 2) if head.classifies else 0
    if not head.classifies or len(weights) != n_classes or not all(w > 0 for w in weights):
        raise ValueError(f"class_weight needs one positive weight per class ({n_classes} for output "
                         f"{head.name!r}), got {class_weight!r}")
    return weights


def _check_non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


class Network:
    """A deep fully-connected network; X is (m, n_x), rows are examples.

    Parameters
    ----------
    layer_sizes : list of int
        ``[n_x, n[1], ..., n[L-1], n_y]``.
    activation : {'relu', 'leaky_relu', 'tanh', 'sigmoid', 'linear'}
        Hidden-layer activation ('linear' only to study deep linear networks, as the notes do).
    output : {'softmax', 'sigmoid', 'linear'}
        Output layer: softmax for n_y >= 2 classes, sigmoid for binary (n_y = 1) or multi-label,
        linear for regression.
    init : {'auto', 'he', 'xavier', 'glorot', 'random', 'zeros'}
        'auto' is He for ReLU and Xavier for tanh/sigmoid. See ``caviar.nn.init``.
    init_scale : float, optional
        Multiplies the scheme's standard deviation (for 'random', it is the standard deviation).
    batchnorm : bool
        Batch norm on Z of every hidden layer (the Dense layer before it then has no bias).
    keep_prob : float or list of float
        Dropout keep probability of each hidden layer's activations; 1.0 is no dropout.
    input_keep_prob : float
        Dropout on the input features (none unless asked).
    l2, l1 : float
        The notes' lambda for L2 (lambd/2m ||W||^2) and L1 (lambd/2m |W|) on every W.
    seed : int, optional
        Seeds initialization, and then shuffling and dropout during ``fit``.
    dtype : {'float32', 'float64'}
        float32 to train; float64 for checks and exact comparisons.
    class_weight : list of float, optional
        One weight per class for the training cost (``balanced_class_weight`` gives the usual
        n / (C n_c)); evaluation's cost stays unweighted.
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", init="auto", init_scale=None,
                 batchnorm=False, keep_prob=1.0, l2=0.0, l1=0.0, seed=None, input_keep_prob=1.0,
                 bn_momentum=0.9, bn_epsilon=1e-5, dtype="float32", class_weight=None):
        sizes = _check_sizes(layer_sizes)
        F.check_activation(activation)
        self.head = heads.get(output)
        self.head.check_n_y(sizes[-1])
        n_hidden = len(sizes) - 2
        keep = list(keep_prob) if isinstance(keep_prob, (list, tuple)) else [keep_prob] * n_hidden
        if len(keep) != n_hidden:
            raise ValueError(f"keep_prob has {len(keep)} entries but the network has {n_hidden} hidden layers")
        keep = [F.check_keep_prob(k) for k in keep]
        init_scheme = initializers.resolve(init, activation)
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' (training) or 'float64' (checking), got {dtype!r}")
        np_dtype = numpy.dtype(str(dtype))
        if init_scale is not None:
            _check_non_negative("init_scale", init_scale)
        self.config = {
            "layer_sizes": sizes, "activation": activation, "output": output, "init": init,
            "init_scale": init_scale, "batchnorm": bool(batchnorm), "keep_prob": keep,
            "l2": _check_non_negative("l2", l2), "l1": _check_non_negative("l1", l1), "seed": seed,
            "input_keep_prob": F.check_keep_prob(input_keep_prob),
            "bn_momentum": float(bn_momentum), "bn_epsilon": float(bn_epsilon), "dtype": str(dtype),
            "class_weight": check_class_weight(class_weight, self.head, sizes[-1]),
        }
        self.rng = backend.rng(seed)  # initialization, then dropout and augmentation
        # On a GPU the weights are still drawn by NumPy from the seed, so that a seed gives the
        # same initial network on every backend; the GPU's own generator draws the dropout masks.
        init_rng = self.rng if backend.name() == "numpy" else numpy.random.default_rng(seed)
        self.layers, self.params, self.buffers = [], {}, {}
        self.extras = {}  # stored with the model file (normalizer, class names, ...)
        # what training adds (optimizer, epochs, history, batch order) lives in caviar.train's
        # TrainingState, attached here by fit and saved by model files; the network never reads it
        self.train_state = None
        if input_keep_prob < 1.0:
            self.layers.append(Dropout(input_keep_prob))
        for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            hidden = l < len(sizes) - 1
            fused = activation if hidden and not batchnorm else "linear"
            dense = Dense(n_in, n_out, fused, init=init_scheme, init_scale=init_scale,
                          bias=not (hidden and batchnorm), rng=init_rng, dtype=np_dtype)
            self._add(dense, l)
            if hidden and batchnorm:
                self._add(BatchNorm(n_out, bn_momentum, bn_epsilon, dtype=np_dtype), l)
                self.layers.append(Activation(activation))
            if hidden and keep[l - 1] < 1.0:
                self.layers.append(Dropout(keep[l - 1]))

    def _add(self, layer, l):
        self.layers.append(layer)
        for name, p in layer.params.items():
            p.name = f"{name}{l}"
            self.params[p.name] = p
        for name, buf in layer.buffers.items():
            self.buffers[f"{name}{l}"] = buf

    # -- shape facts ---------------------------------------------------------------------
    @property
    def n_x(self):
        return self.config["layer_sizes"][0]

    @property
    def n_y(self):
        return self.config["layer_sizes"][-1]

    @property
    def output(self):
        return self.config["output"]

    def parameters(self):
        return list(self.params.values())

    def weights(self):
        """The W of every layer: what L2 and L1 regularize (biases, gamma and beta are not)."""
        return [p for name, p in self.params.items() if name.startswith("W")]

    def zero_grad(self):
        for p in self.params.values():
            p.grad = None

    # -- input checks --------------------------------------------------------------------
    def check_X(self, X):
        X = X.data if isinstance(X, Tensor) else X
        if not hasattr(X, "ndim"):
            X = numpy.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array of shape (m, n_x), got shape {X.shape}")
        if X.shape[1] != self.n_x:
            raise ValueError(f"X has {X.shape[1]} columns but the network was built for n_x = {self.n_x} inputs")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold numbers, got dtype {X.dtype}")
        return backend.to_device(X)  # on a GPU, data loaded by NumPy moves there once

    def check_y(self, y, m=None):
        """Validate labels against the network's output; return them as an array."""
        return self.head.check_y(y, self.n_y, m)

    # -- forward and cost ----------------------------------------------------------------
    def forward(self, X, training=False):
        """The logits Z[L] (a Tensor) for inputs X of shape (m, n_x)."""
        a = X if isinstance(X, Tensor) else Tensor(X)
        for layer in self.layers:
            a = layer(a, training, self.rng)
        return a

    __call__ = forward

    def loss(self, logits, y, weights=None):
        """The data term of J: the mean loss over the examples, without regularization (each
        example weighted by its class's ``class_weight``, if given, times its own ``weights``)."""
        cw = self.config["class_weight"]
        if cw is not None:
            weights = self.head.example_weights(y, cw) * (1.0 if weights is None else weights)
        return self.head.loss(logits, y, weights)

    def regularization(self, m):
        """lambd/(2m) sum ||W||^2 + lambd1/(2m) sum |W|, or None without regularization."""
        terms = []
        if self.config["l2"] > 0:
            terms.append(F.l2_penalty(self.weights(), self.config["l2"], m))
        if self.config["l1"] > 0:
            terms.append(F.l1_penalty(self.weights(), self.config["l1"], m))
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def cost(self, X, y, training=True):
        """J on a batch: mean loss plus the regularization terms (as a scalar Tensor)."""
        m = len(X)
        J = self.loss(self.forward(X, training), y)
        reg = self.regularization(m)
        return J if reg is None else J + reg

    # -- inference -----------------------------------------------------------------------
    def _logits(self, X):
        X = self.check_X(X)
        with no_grad():
            chunks = [self.forward(X[i : i + EVAL_CHUNK], training=False).data for i in range(0, len(X), EVAL_CHUNK)]
        mod = backend.get_array_module(chunks[0]) if chunks else backend.xp
        return mod.concatenate(chunks) if len(chunks) != 1 else chunks[0]

    def predict_proba(self, X):
        """Class probabilities (m, n_y): softmax, or sigmoid per output; raw outputs for 'linear'."""
        return self.head.proba(self._logits(X))

    def predict(self, X):
        """Class labels: hardmax for softmax, p > 0.5 for sigmoid; values for 'linear'."""
        return self.head.predict(self._logits(X))

    def evaluate(self, X, y):
        """{'cost', 'accuracy'} (for regression 'mse', 'rmse', 'mae', 'r2') with dropout off
        and running statistics.

        'cost' is the mean loss without the regularization term, so train and dev compare.
        """
        X = self.check_X(X)
        y = self.check_y(y, len(X))
        z = Tensor(self._logits(X))
        with no_grad():
            cost = float(self.head.loss(z, y).data)  # unweighted: what a prediction costs
        return {"cost": cost, **self.head.metrics(z.data, y)}

    def __repr__(self):
        c = self.config
        extras = [f"{k}={c[k]!r}" for k in ("batchnorm", "l2", "l1") if c[k]]
        if any(k < 1 for k in c["keep_prob"]):
            extras.append(f"keep_prob={c['keep_prob']}")
        return f"Network({c['layer_sizes']}, activation={c['activation']!r}, output={c['output']!r}{''.join(', ' + e for e in extras)})"
