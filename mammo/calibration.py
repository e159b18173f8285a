"""Score calibration: temperature scaling of per-class probabilities, fitted on validation data.

A network trained with class-balanced losses, on a few dozen positives, ranks images but its
scores are not probabilities. Temperature scaling (Guo et al. 2017) keeps the ranking (so the
AUC) and maps each score p to sigmoid(logit(p) / T + b), with T > 0 and an offset b per class
fitted by maximum likelihood on the validation split (Platt's two-parameter form; b moves the
balanced-loss prior back to the data's). The fitted values ship in the weights manifest
(`calibration`), and the pipeline applies them, so `/predict`, `scores.json` and
`predictions.csv` carry probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6
T_RANGE = (0.05, 20.0)  # the temperatures `fit_temperature` may choose


@dataclass(frozen=True)
class Temperature:
    """sigmoid(logit(p) / temperature + bias), one per class."""

    temperature: float
    bias: float = 0.0

    def __call__(self, p: np.ndarray | float) -> np.ndarray:
        z = logit(np.asarray(p, np.float64)) / self.temperature + self.bias
        return 1.0 / (1.0 + np.exp(-z))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [EPS, 1 - EPS]."""
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def fit_temperature(scores: np.ndarray, labels: np.ndarray, bias: bool = True) -> Temperature:
    """Fit T (and b) by minimising the binary log loss of sigmoid(logit(s) / T + b) on (scores, labels).

    Args:
        scores: float (N,) in [0, 1]; labels: int (N,) in {0, 1}, both classes present.
        bias: also fit the offset b (else b = 0: pure temperature scaling).

    Raises:
        ValueError: mismatched lengths or a single class (nothing to calibrate against).
    """
    from scipy.optimize import minimize

    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be matching 1-D arrays")
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both classes among the labels")
    z = logit(s)

    def loss(params: np.ndarray) -> float:
        q = z * np.exp(-params[0]) + (params[1] if bias else 0.0)
        return float(np.mean(np.logaddexp(0, q) - y * q))  # BCE in logits, numerically safe

    # T is kept in [1/20, 20]: scores that do not rank the classes (AUC <= 0.5) would otherwise
    # send T to infinity, a constant that throws away whatever order the scores carry elsewhere.
    bounds = [(np.log(T_RANGE[0]), np.log(T_RANGE[1])), (-10.0, 10.0) if bias else (0.0, 0.0)]
    fit = minimize(loss, np.zeros(2), method="L-BFGS-B", bounds=bounds)
    return Temperature(float(np.exp(fit.x[0])), float(fit.x[1]) if bias else 0.0)


def reliability(scores: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, list[float] | float]:
    """Reliability diagram data and the expected calibration error (equal-width bins on [0, 1]).

    Returns:
        {"bin_edges": (bins+1), "mean_score": per bin (NaN if empty), "fraction_positive": per
        bin, "count": per bin, "ece": sum over bins of count/N * |fraction_positive - mean_score|}.
    """
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(s, edges[1:-1]), 0, bins - 1)
    mean, frac, count, ece = [], [], [], 0.0
    for b in range(bins):
        pick = which == b
        n = int(pick.sum())
        count.append(n)
        mean.append(float(s[pick].mean()) if n else float("nan"))
        frac.append(float(y[pick].mean()) if n else float("nan"))
        if n:
            ece += n / len(s) * abs(frac[-1] - mean[-1])
    return {"bin_edges": edges.tolist(), "mean_score": mean, "fraction_positive": frac, "count": count,
            "ece": float(ece)}
