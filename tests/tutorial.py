"""The tutorial's own code (W1D3 Tutorial 1), re-implemented as written: the tests' oracles.

Only what the tests compare against lives here; each function keeps the tutorial's name,
signature and arithmetic, so a difference from mlplab is a difference from the tutorial.
"""

# ruff: noqa: E741  (I is the tutorial's name for the input current)

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed=None, seed_torch=True):
    """The tutorial's ``set_seed`` (without its print)."""
    if seed is None:
        seed = np.random.choice(2**32)
    random.seed(seed)
    np.random.seed(seed)
    if seed_torch:
        torch.manual_seed(seed)
        torch.cuda.manual_seed_all(seed)
        torch.cuda.manual_seed(seed)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def create_spiral_dataset(K, sigma, N):
    """The tutorial's ``create_spiral_dataset``, verbatim."""
    t = torch.linspace(0, 1, N)
    X = torch.zeros(K * N, 2)
    y = torch.zeros(K * N)
    for k in range(K):
        X[k * N : (k + 1) * N, 0] = t * (
            torch.sin(2 * np.pi / K * (2 * t + k)) + sigma * torch.randn(N)
        )
        X[k * N : (k + 1) * N, 1] = t * (
            torch.cos(2 * np.pi / K * (2 * t + k)) + sigma * torch.randn(N)
        )
        y[k * N : (k + 1) * N] = k
    return X, y


def shuffle_and_split_data(X, y, seed):
    """The tutorial's ``shuffle_and_split_data`` solution: note its (test, train) return order."""
    torch.manual_seed(seed)
    N = X.shape[0]
    shuffled_indices = torch.randperm(N)
    X = X[shuffled_indices]
    y = y[shuffled_indices]
    test_size = int(0.2 * N)
    X_test = X[:test_size]
    y_test = y[:test_size]
    X_train = X[test_size:]
    y_train = y[test_size:]
    return X_test, y_test, X_train, y_train


def run_LIF(I, T=50, dt=0.1, tau_ref=10, Rm=1, Cm=10, Vth=1, V_spike=0.5):
    """The tutorial's ``run_LIF``, verbatim (Bonus section)."""
    # Set up array of time steps
    time = torch.arange(0, T + dt, dt)

    # Set up array for tracking Vm
    Vm = torch.zeros(len(time))

    # Iterate over each time step
    t_rest = 0
    for i, t in enumerate(time):
        # If t is after refractory period
        if t > t_rest:
            Vm[i] = Vm[i - 1] + 1 / Cm * (-Vm[i - 1] / Rm + I) * dt

        # If Vm is over the threshold
        if Vm[i] >= Vth:
            # Increase volatage by change due to spike
            Vm[i] += V_spike

            # Set up new refactory period
            t_rest = t + tau_ref

    return time, Vm
