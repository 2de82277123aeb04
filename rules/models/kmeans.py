"""k-means evaluation with plain math: standardise a customer's features with the fitted scaler
and find the nearest centroid (squared Euclidean distance in the standardised space)."""

from __future__ import annotations

from collections.abc import Sequence


def standardise(values: Sequence[float], mean: Sequence[float],
                scale: Sequence[float]) -> list[float]:
    """(value − mean) / scale per feature (a scale of 0 is taken as 1, as scikit-learn does)."""
    return [(v - m) / (s or 1.0) for v, m, s in zip(values, mean, scale, strict=True)]


def squared_distances(point: Sequence[float],
                      centroids: Sequence[Sequence[float]]) -> list[float]:
    return [sum((p - c) * (p - c) for p, c in zip(point, centroid, strict=True))
            for centroid in centroids]


def nearest_centroid(point: Sequence[float], centroids: Sequence[Sequence[float]]) -> int:
    """Index of the centroid nearest to `point` (already standardised); ties go to the lowest
    index, as in scikit-learn's `predict`."""
    distances = squared_distances(point, centroids)
    best = 0
    for i in range(1, len(distances)):
        if distances[i] < distances[best]:
            best = i
    return best
