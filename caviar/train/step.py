"""A population's training step without the tape.

The notes' layer backprop written once for a population's stack of Dense -> [BatchNorm] ->
activation -> [Dropout] layers and its head: the forward pass keeps what each layer's backward
needs, and the backward pass runs the layers in reverse, each with the same data-level
functions its op's closure calls (``caviar.functional``: the fused bias and activation, its
gradient with db, batch norm's forward and closed-form gradient, dropout's scale, which the
ReLU gradient's kernel of the layer below takes in its own pass where the dropout is above a
ReLU; a dropout above a Dense layer's ReLU runs in that layer's pass, and a ReLU layer above
batch norm in batch norm's forward pass; the same matrix products on the same arrays).
Passes whose input is a fresh array of the step write over it (batch norm's xhat over a
linear layer's Z, the ReLU's and batch norm's gradients over dA, a dropout above a ReLU over
the ReLU's output, its mask kept as bools), so a step touches less memory; the values are
the same. Every gradient is therefore the tape's, bit for bit (``tests/test_step.py``), and
a member still equals its solo run. The head gives each member's loss and dZ[L]
(``Head.member_loss_grads``: softmax with class indices computes them directly, the other
heads on the tape). The rest of the tape's work per op (a Tensor and a closure, the graph's
sort, the dictionary of gradients, shape checks) is left out.

``supports`` says which populations it takes (NumPy, every layer one of those four, outside
``detect_anomaly``); the others train through the tape.
"""

from __future__ import annotations

from .. import backend
from .. import functional as F
from ..autodiff import is_anomaly_enabled
from ..nn.layers import Activation, BatchNorm, Dense
from .dropout import PopulationDropout


def supports(pop):
    """Whether population ``pop``'s steps run here: NumPy, every layer one of the four,
    outside ``detect_anomaly`` (which checks every op's output on the tape)."""
    if backend.name() != "numpy" or is_anomaly_enabled():
        return False
    return all(isinstance(layer, (Dense, BatchNorm, Activation, PopulationDropout)) for layer in pop.net.layers)


def run(pop, Xb, yb):
    """The forward and backward pass of population ``pop``'s mini-batch: (each member's data
    loss (K,) in the parameters' dtype, the logits (K, m, n_y)), with every parameter's
    ``.grad`` set."""
    a, saved = Xb, []  # augmented batches are (K, m, n), one per member
    layers, fused = pop.net.layers, False
    relu = None  # the last ReLU's output, a fresh array of this step's
    dropped = None  # the dropout above a ReLU layer, done in that layer's pass: (inverses, kept)
    for i, layer in enumerate(layers):
        if fused:  # the ReLU layer batch norm below it computed
            fused = False
        elif isinstance(layer, Dense):
            b = layer.params.get("b")
            b = None if b is None else b.data
            z = a @ layer.params["W"].data
            above = layers[i + 1] if i + 1 < len(layers) else None
            if layer.activation == "relu" and isinstance(above, PopulationDropout):
                dropped = above.bias_relu_over(z, b) or None  # bias, ReLU and the dropout in one pass
            out = z if dropped else F._bias_activate(z, b, layer.activation, F.LEAKY_SLOPE)
            saved.append((layer, a, out))
            a = out
            relu = out if layer.activation == "relu" else None
        elif isinstance(layer, BatchNorm):
            # a ReLU layer above runs in batch norm's forward pass
            fused = i + 1 < len(layers) and isinstance(layers[i + 1], Activation) and layers[i + 1].name == "relu"
            # xhat written over Z where Z is a linear layer's fresh product (its backward reads no output)
            fresh = i > 0 and isinstance(layers[i - 1], Dense) and layers[i - 1].activation == "linear"
            args = (a, layer.params["gamma"].data, layer.params["beta"].data,
                    (layer.buffers["running_mean"], layer.buffers["running_var"]), layer.momentum, layer.epsilon)
            done = None
            if fused and fresh and i + 2 < len(layers) and isinstance(layers[i + 2], PopulationDropout):
                done = layers[i + 2].batch_norm_relu_over(*args)  # and the dropout above the ReLU, in its pass
            if done is not None:
                a, xhat, inv_std, dropped = done
            else:
                a, xhat, inv_std = F.batch_norm_train(*args, fused, overwrite=fresh)
            saved.append((layer, xhat, (inv_std, a if fused else None)))
            relu = a if fused else None
        elif isinstance(layer, Activation):
            out = a if layer.name == "linear" else F._bias_activate(a, None, layer.name, F.LEAKY_SLOPE, False)
            saved.append((layer, None, out))
            a = out
            relu = out if layer.name == "relu" else None
        elif isinstance(layer, PopulationDropout):
            # above a ReLU, written over its output (which then gives the ReLU's gradient and
            # the dropout's scale from bools); else a * scale, with the scale kept
            drop = dropped if dropped else layer.drop_over(a) if a is relu else False
            dropped, scale = None, None
            if drop is False:
                a, scale = layer.drop(a)
                drop = None
            saved.append((layer, scale, drop))
            relu = None
    # the head: its loss per member and dZ[L], as backprop of the population's cost gives them
    cw = pop.shared["class_weight"]
    losses, g = pop.head.member_loss_grads(a, yb, None if cw is None else pop.head.example_weights(yb, cw))
    # a dropout's scale, multiplied into g, or dropout_over's (inverses, kept), which the ReLU
    # gradient's pass of the layer below takes in
    scale = drop = None
    mine = False  # whether g is this step's fresh array (not the head's), which a pass may overwrite
    for layer, kept, out in reversed(saved):
        if isinstance(layer, Dense):
            W, b = layer.params["W"], layer.params.get("b")
            # the first layer's input needs no gradient
            g, W.grad, db = F.dense_backward(g, kept, W.data, out, layer.activation, F.LEAKY_SLOPE,
                                             None if b is None else b.shape, kept is not Xb, scale=scale, drop=drop,
                                             overwrite=mine)
            if b is not None:
                b.grad = db
        elif isinstance(layer, BatchNorm):
            gamma, beta = layer.params["gamma"], layer.params["beta"]
            g, gamma.grad, beta.grad = F.batch_norm_grad(g, kept, gamma.data, *out, scale, drop, overwrite=mine)
        elif isinstance(layer, Activation):
            if layer.name != "linear":
                g = F._backprop_activation(g, out, layer.name, F.LEAKY_SLOPE, scale=scale, drop=drop,
                                           overwrite=mine)[0]
            elif scale is not None:
                g = g * scale
        mine = not isinstance(layer, PopulationDropout) or mine  # each pass above gives a fresh g
        if not isinstance(layer, PopulationDropout):
            scale = drop = None
        else:  # its scale (None: no member drops units) goes into the pass of the layer below
            if scale is not None:  # two dropouts in a row
                g = g * scale
            scale, drop = kept, out
    return losses, a
