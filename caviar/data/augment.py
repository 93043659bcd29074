"""Data augmentation for image data, applied on the fly to training mini-batches only.

The notes' regularization by data: flip a cat picture, shift or rotate it a little, and for
characters (the notes' OCR example) distort it elastically. Each image is a row of X that
reshapes to ``image_shape`` (height, width). Labels are unchanged.
"""

from __future__ import annotations

import numpy

OPS = ("flip", "shift", "rotate", "elastic")


class Augmenter:
    """``augmenter(X_batch, rng)`` returns an augmented copy of the batch (same shape and dtype).

    Parameters
    ----------
    image_shape : (height, width)
    ops : iterable of {'flip', 'shift', 'rotate', 'elastic'}
    max_shift : int, pixels; max_angle : degrees
    elastic_alpha, elastic_sigma : strength and smoothness of the elastic displacement field
        (Simard et al., 2003), in pixels.
    normalizer : Normalizer, optional
        When batches arrive normalized, augment in the raw pixel space (background 0) and
        normalize again, so a shifted-in border is blank paper, not the mean image.
    """

    def __init__(self, image_shape, ops=("flip", "shift"), max_shift=1, max_angle=10.0,
                 elastic_alpha=2.0, elastic_sigma=1.0, normalizer=None):
        if len(image_shape) != 2 or any(int(s) < 1 for s in image_shape):
            raise ValueError(f"image_shape must be (height, width), got {image_shape!r}")
        ops = [ops] if isinstance(ops, str) else list(ops)
        unknown = [op for op in ops if op not in OPS]
        if unknown or not ops:
            raise ValueError(f"unknown augmentation {unknown[0] if unknown else ops!r}; expected some of {', '.join(OPS)}")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.ops, self.max_shift, self.max_angle = ops, int(max_shift), float(max_angle)
        self.elastic_alpha, self.elastic_sigma = float(elastic_alpha), float(elastic_sigma)
        self.normalizer = normalizer

    def __call__(self, X, rng):
        from scipy import ndimage

        h, w = self.image_shape
        X = numpy.asarray(X)
        if X.ndim != 2 or X.shape[1] != h * w:
            raise ValueError(f"augmentation for {h}x{w} images needs rows of {h * w} values, got shape {X.shape}")
        raw = self.normalizer.inverse_transform(X) if self.normalizer is not None else X
        images = raw.reshape(-1, h, w).astype(numpy.float64)
        out = numpy.empty_like(images)
        for i, img in enumerate(images):
            if "flip" in self.ops and rng.random() < 0.5:
                img = img[:, ::-1]
            if "rotate" in self.ops:
                img = ndimage.rotate(img, rng.uniform(-self.max_angle, self.max_angle), reshape=False, order=1, mode="constant")
            if "elastic" in self.ops:
                img = self._elastic(img, rng, ndimage)
            if "shift" in self.ops and self.max_shift > 0:
                dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
                img = ndimage.shift(img, (int(dy), int(dx)), order=0, mode="constant")
            out[i] = img
        flat = out.reshape(len(X), h * w)
        if self.normalizer is not None:
            flat = self.normalizer.transform(flat)
        return flat.astype(X.dtype)

    def _elastic(self, img, rng, ndimage):
        h, w = img.shape
        dy = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), self.elastic_sigma) * self.elastic_alpha
        dx = ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), self.elastic_sigma) * self.elastic_alpha
        rows, cols = numpy.meshgrid(numpy.arange(h), numpy.arange(w), indexing="ij")
        return ndimage.map_coordinates(img, [rows + dy, cols + dx], order=1, mode="constant")

    def __repr__(self):
        return f"Augmenter({self.image_shape}, ops={self.ops})"
