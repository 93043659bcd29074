"""Populations against their peers, the same work on every side: caviar's ``Population``, JAX
``jit(vmap(step))`` with optax, and PyTorch (hand-batched ``matmul`` + autograd, and
``torch.func.vmap``), each in its own process.

Every side trains the same K networks from the same initial weights (He normal, per member
seed), on the same mini-batches in the same order (caviar's order for the study seed), with the
same cost (mean cross-entropy + lambda/(2m) sum ||W||^2, per member) and Adam (per-member
learning rates, betas 0.9/0.999, epsilon 1e-8), and evaluates the dev set after every epoch.
Times: the first run (JAX compiles then) and the best of the warm runs after it. The members'
final dev accuracies must agree across sides (to float32 rounding: the mean over members within
half a point).

    python benchmarks/population_peers.py [--workload digits|wide|both] [--sides caviar,jax,torch-bmm,torch-vmap]
                                          [--device cpu|gpu]

Workloads: ``digits`` — 64 configurations (32 x 64-32-10 and 32 x 64-32-32-10) on digits, 20
epochs, batch 64; ``wide`` — 16 x 784-256-128-10 on 60,000 x 784 (synthetic, a random teacher's
labels), batch 128, 2 epochs. JAX and optax come with ``pip install ".[bench]"``.

``--device gpu`` runs every side on the first CUDA device: caviar on its CuPy backend, JAX on
its GPU platform, PyTorch on ``cuda``; all three multiply float32 matrices in float32 (JAX's
default on a GPU would round the products' inputs to TF32, so its precision is set to
"highest"; PyTorch and CuPy do not use TF32 unless told to). ``--device cpu`` (the default)
keeps JAX on its CPU platform.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

SIDES = ("caviar", "jax", "torch-bmm", "torch-vmap")


# -- the work: data, groups of members, initial weights, batches ---------------------------------
def workload(name):
    """(X_train, y_train, X_dev, y_dev, groups, epochs, batch): ``groups`` lists (layer sizes,
    members), each member a dict with seed, lr, l2."""
    rng = np.random.default_rng(0)
    if name == "digits":
        from caviar import data as D

        ds = D.load("digits")
        s = D.split(ds.X, ds.y, seed=0)
        norm = D.Normalizer().fit(s.train[0])
        Xt, yt = norm.transform(s.train[0]).astype(np.float32), s.train[1].astype(np.int64)
        Xd, yd = norm.transform(s.dev[0]).astype(np.float32), s.dev[1].astype(np.int64)
        groups = []
        for depth in (1, 2):
            members = [{"seed": 100 * depth + i, "lr": float(10 ** rng.uniform(-3.5, -1.5)),
                        "l2": float(10 ** rng.uniform(-4, 0))} for i in range(32)]
            groups.append(([64] + [32] * depth + [10], members))
        return Xt, yt, Xd, yd, groups, 20, 64
    if name == "wide":
        X = rng.standard_normal((70000, 784)).astype(np.float32)
        teacher = rng.standard_normal((784, 10)).astype(np.float32)
        y = np.argmax(X @ teacher, axis=1).astype(np.int64)
        members = [{"seed": i, "lr": float(10 ** rng.uniform(-4, -2.5)), "l2": float(10 ** rng.uniform(-4, -1))}
                   for i in range(16)]
        return X[:60000], y[:60000], X[60000:], y[60000:], [([784, 256, 128, 10], members)], 2, 128
    raise SystemExit(f"unknown workload {name!r}")


def initial_weights(sizes, members):
    """Stacked (K, ...) weights and biases: He normal from each member's seed, zero biases."""
    Ws, bs = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        Ws.append(np.stack([np.random.default_rng([m["seed"], n_in, n_out]).standard_normal((n_in, n_out))
                            * np.sqrt(2.0 / n_in) for m in members]).astype(np.float32))
        bs.append(np.zeros((len(members), 1, n_out), dtype=np.float32))
    return Ws, bs


def batch_order(m, batch, epochs, seed=0):
    """Every epoch's mini-batches, as caviar's loop draws them for shuffle seed ``seed``."""
    from caviar import backend
    from caviar.train.batches import minibatch_indices

    rng = backend.shuffle_rng(seed)
    return [[np.asarray(idx) for idx in minibatch_indices(m, batch, rng, True, 1)] for _ in range(epochs)]


# -- the sides: each returns the members' final dev accuracies ---------------------------------------
def run_caviar(X, y, Xd, yd, sizes, members, epochs, batch, order, device="cpu"):
    from caviar import backend
    from caviar.train.population import Population

    pop = Population(sizes, [dict(m) for m in members], optimizer="adam")
    Ws, bs = initial_weights(sizes, members)
    for l, (W, b) in enumerate(zip(Ws, bs), start=1):
        pop.net.params[f"W{l}"].data[...] = backend.xp.asarray(W)
        pop.net.params[f"b{l}"].data[...] = backend.xp.asarray(b)
    histories = pop.fit(X, y, epochs=epochs, batch_size=batch, validation_data=(Xd, yd), shuffle_seed=0)
    # the last epoch's dev evaluation, as the other sides report theirs (a member's own
    # evaluation afterwards gives the same accuracy, and would be work the others do not do)
    return [histories[i]["dev_accuracy"][-1] for i in range(len(members))]


def run_torch(X, y, Xd, yd, sizes, members, epochs, batch, order, device="cpu", vmap=False):
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    dev = "cuda" if device == "gpu" else "cpu"
    K = len(members)
    Ws, bs = initial_weights(sizes, members)
    params = [torch.tensor(a, requires_grad=True, device=dev) for pair in zip(Ws, bs) for a in pair]
    lr = torch.tensor([m["lr"] for m in members], dtype=torch.float32, device=dev)
    lam = torch.tensor([m["l2"] for m in members], dtype=torch.float32, device=dev)
    v = [torch.zeros_like(p) for p in params]
    s = [torch.zeros_like(p) for p in params]
    X, y, Xd, yd = (torch.from_numpy(a).to(dev) for a in (X, y, Xd, yd))
    n_layers = len(sizes) - 1

    def forward_one(ps, a):
        for l in range(n_layers):
            a = a @ ps[2 * l] + ps[2 * l + 1]
            if l < n_layers - 1:
                a = torch.relu(a)
        return a

    def cost_one(ps, lam_k, a, labels):
        logits = forward_one(ps, a)
        logits = logits.reshape(-1, logits.shape[-1])
        reg = sum((ps[2 * l] ** 2).sum() for l in range(n_layers))
        return torch.nn.functional.cross_entropy(logits, labels) + lam_k / (2 * len(labels)) * reg

    if vmap:
        from torch.func import grad, vmap as tvmap

        grads_of = tvmap(grad(cost_one), in_dims=(0, 0, None, None))

    t = 0
    for epoch in range(epochs):
        for idx in order[epoch]:
            idx = torch.from_numpy(idx).to(dev)
            a, labels = X[idx], y[idx]
            if vmap:
                with torch.no_grad():
                    gs = grads_of(tuple(p.detach() for p in params), lam, a, labels)
            else:
                for p in params:
                    p.grad = None
                logits = forward_one(params, a)  # (K, m, n_y) by broadcasting
                data = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.repeat(K),
                                                         reduction="none").reshape(K, -1).mean(1)
                reg = sum((params[2 * l] ** 2).sum(dim=(1, 2)) for l in range(n_layers))
                (data + lam / (2 * len(labels)) * reg).sum().backward()
                gs = [p.grad for p in params]
            t += 1
            with torch.no_grad():  # Adam, per-member learning rates
                for p, g, vv, ss in zip(params, gs, v, s):
                    vv.mul_(0.9).add_(g, alpha=0.1)
                    ss.mul_(0.999).addcmul_(g, g, value=0.001)
                    step = (vv / (1 - 0.9 ** t)) / ((ss / (1 - 0.999 ** t)).sqrt() + 1e-8)
                    p.sub_(lr.view(K, *([1] * (p.dim() - 1))) * step)
        with torch.no_grad():
            accuracy = (forward_one(params, Xd).argmax(-1) == yd).float().mean(1)
    return [float(a) for a in accuracy]


_JAX = {}


def _jax_functions(n_layers):
    """The jitted functions for networks of ``n_layers`` layers, made once, so warm runs reuse
    their compiled code (their arguments, not closures, carry the data and hyperparameters)."""
    if n_layers in _JAX:
        return _JAX[n_layers]
    import jax
    import optax

    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8)

    def forward_one(ps, a):
        for l in range(n_layers):
            a = a @ ps[2 * l] + ps[2 * l + 1][0]
            if l < n_layers - 1:
                a = jax.nn.relu(a)
        return a

    def cost_one(ps, lam_k, a, labels):
        logits = forward_one(ps, a)
        data = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return data + lam_k / (2 * labels.shape[0]) * sum((ps[2 * l] ** 2).sum() for l in range(n_layers))

    def step_one(ps, state, lam_k, lr_k, a, labels):
        g = jax.grad(cost_one)(ps, lam_k, a, labels)
        updates, state = adam.update(g, state)
        return [p - lr_k * u for p, u in zip(ps, updates)], state

    members_step = jax.vmap(step_one, in_axes=(0, 0, 0, 0, None, None))

    @jax.jit
    def full_batches(params, state, lam, lr, X, y, idx):  # JAX at its best: a whole epoch's equal batches in one scan
        def body(carry, i):
            return members_step(*carry, lam, lr, X[i], y[i]), None

        return jax.lax.scan(body, (params, state), idx)[0]

    rest = jax.jit(lambda params, state, lam, lr, X, y, i: members_step(params, state, lam, lr, X[i], y[i]))
    accuracy_of = jax.jit(jax.vmap(lambda ps, Xd, yd: (forward_one(ps, Xd).argmax(-1) == yd).mean(),
                                   in_axes=(0, None, None)))
    _JAX[n_layers] = (full_batches, rest, accuracy_of, jax.vmap(adam.init))
    return _JAX[n_layers]


def run_jax(X, y, Xd, yd, sizes, members, epochs, batch, order, device="cpu"):
    import jax.numpy as jnp

    Ws, bs = initial_weights(sizes, members)
    params = [jnp.asarray(a) for pair in zip(Ws, bs) for a in pair]
    lr = jnp.asarray([m["lr"] for m in members], dtype=jnp.float32)
    lam = jnp.asarray([m["l2"] for m in members], dtype=jnp.float32)
    full_batches, rest, accuracy_of, init = _jax_functions(len(sizes) - 1)
    state = init(params)
    Xj, yj, Xdj, ydj = jnp.asarray(X), jnp.asarray(y), jnp.asarray(Xd), jnp.asarray(yd)
    for epoch in range(epochs):
        full = [i for i in order[epoch] if len(i) == batch]
        params, state = full_batches(params, state, lam, lr, Xj, yj, jnp.asarray(np.stack(full)))
        for i in order[epoch][len(full):]:  # the last, smaller batch
            params, state = rest(params, state, lam, lr, Xj, yj, jnp.asarray(i))
        accuracy = accuracy_of(params, Xdj, ydj)
    return [float(a) for a in np.asarray(accuracy)]


def on_device(side, device):
    """Put ``side``'s library on ``device`` before the work; the device's name."""
    if side == "caviar":
        from caviar import backend

        if device == "gpu":
            backend.use("cupy")
            import cupy

            found = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            return found.decode() if isinstance(found, bytes) else found
        return "cpu"
    if side == "jax":
        import jax

        if device == "gpu":
            jax.config.update("jax_default_matmul_precision", "highest")  # float32 products, as the others
        found = jax.devices()[0]
        if (found.platform == "gpu") != (device == "gpu"):
            raise SystemExit(f"JAX runs on {found.platform}, not {device}")
        return found.device_kind
    import torch

    if device == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("PyTorch finds no CUDA device")
        return torch.cuda.get_device_name(0)
    return "cpu"


def child(side, name, repeats, device="cpu"):
    where = on_device(side, device)
    X, y, Xd, yd, groups, epochs, batch = workload(name)
    order = batch_order(len(X), batch, epochs)
    run = {"caviar": run_caviar, "jax": run_jax, "torch-bmm": run_torch,
           "torch-vmap": lambda *a, **k: run_torch(*a, **k, vmap=True)}[side]
    times, accuracies = [], None
    for _ in range(1 + repeats):
        t0 = time.perf_counter()  # every side ends on its accuracies copied to the host: its work has finished
        accuracies = [a for sizes, members in groups
                      for a in run(X, y, Xd, yd, sizes, members, epochs, batch, order, device=device)]
        times.append(time.perf_counter() - t0)
    print(json.dumps({"first": times[0], "warm": min(times[1:]), "accuracies": accuracies, "device": where}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="both", choices=["digits", "wide", "both"])
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--repeats", type=int, default=2, help="warm runs after the first")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                        help="where every side runs: the CPU, or the first CUDA device")
    parser.add_argument("--child", nargs=2, metavar=("SIDE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child, args.repeats, args.device)
    from blas import kernels

    print(f"BLAS: {kernels()}" if args.device == "cpu" else "device: GPU (each side names the one it found)")
    env = dict(os.environ)
    if args.device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"  # where JAX also has a GPU plugin
    for name in (["digits", "wide"] if args.workload == "both" else [args.workload]):
        results = {}
        for side in args.sides.split(","):
            r = subprocess.run([sys.executable, __file__, "--child", side, name, "--repeats", str(args.repeats),
                                "--device", args.device], capture_output=True, text=True, check=False, env=env)
            if r.returncode != 0:
                error = "\n    ".join(r.stderr.strip().splitlines()[-8:]) or f"exit code {r.returncode}"
                print(f"{name:<7} {side:<11} failed:\n    {error}")
                continue
            results[side] = json.loads(r.stdout.strip().splitlines()[-1])
            acc = np.mean(results[side]["accuracies"])
            print(f"{name:<7} {side:<11} first run {results[side]['first']:7.2f} s   warm {results[side]['warm']:7.2f} s"
                  f"   mean dev accuracy {acc:.4f}" + ("" if args.device == "cpu" else f"   on {results[side]['device']}"),
                  flush=True)
        if "caviar" in results:
            for side, r in results.items():
                if side != "caviar":
                    print(f"{name:<7} {side} / caviar: warm {r['warm'] / results['caviar']['warm']:.2f}, "
                          f"first run {r['first'] / results['caviar']['first']:.2f}")
            means = [np.mean(r["accuracies"]) for r in results.values()]
            print(f"{name:<7} mean dev accuracies agree within {max(means) - min(means):.4f}")


if __name__ == "__main__":
    main()
