"""Our registered solvers as dimod samplers: ``SolverSampler("its")`` runs on any
``dimod.BinaryQuadraticModel`` (BINARY or SPIN, any hashable variable labels) and returns a
``dimod.SampleSet`` in the model's own vartype and labels, energies from the model itself.

The model becomes a one-row :class:`~qubo_round.problem.DenseQUBO` (``x^T Q x + offset``; a SPIN
model is solved in its BINARY form, ``s = 2 x - 1``, and mapped back); every sample the solver
returns is one row of the sample set, as int8. Parameters of the solver are fixed at
construction; ``sample`` takes ``seed``, ``time_limit`` and ``initial_states`` (one state, the
warm start). Needs dimod (a core dependency)::

    from qubo_round.solvers.as_sampler import SolverSampler
    sampleset = SolverSampler("its", sweeps=50).sample(bqm, seed=0)
"""
from __future__ import annotations

import numpy as np

from qubo_round.problem import DenseQUBO

from .registry import get_solver

import dimod

__all__ = ["SolverSampler"]


class SolverSampler(dimod.Sampler):
    """A dimod sampler running the registered solver ``spec`` (name, preset or chain) with ``params``."""

    def __init__(self, spec: str, **params) -> None:
        self.solver = get_solver(spec, **params)  # validates the name and the parameters now
        self.spec = spec

    @property
    def parameters(self) -> dict:
        return {"seed": [], "time_limit": [], "initial_states": []}

    @property
    def properties(self) -> dict:
        return {"solver": self.spec, "params": repr(self.solver.params)}

    def sample(self, bqm, seed: int | None = None, time_limit: float | None = None,
               initial_states=None, **kwargs):
        """Solve ``bqm``; returns a ``dimod.SampleSet`` (int8 samples, the model's vartype)."""
        self.remove_unknown_kwargs(**kwargs)  # warns and drops what the solver does not take
        spin = bqm.vartype is dimod.SPIN
        binary = bqm.change_vartype(dimod.BINARY, inplace=False) if spin else bqm
        labels = list(binary.variables)
        if not labels:
            return dimod.SampleSet.from_samples_bqm(([[]], []), bqm)
        idx = {v: i for i, v in enumerate(labels)}
        lin = {idx[v]: float(b) for v, b in binary.linear.items()}
        quad = {(idx[u], idx[v]): float(b) for (u, v), b in binary.quadratic.items()}
        problem = DenseQUBO.from_linear_quadratic(len(labels), lin, quad, offset=float(binary.offset))
        start = None
        if initial_states is not None:
            arr, init_labels = dimod.as_samples(initial_states)
            if arr.shape[0] != 1:
                raise ValueError(f"initial_states: give one state (the warm start), got {arr.shape[0]}")
            where = {v: i for i, v in enumerate(init_labels)}
            order = [where[v] for v in labels]
            x0 = arr[0, order].astype(np.int64)
            start = ((x0 + 1) // 2 if spin else x0).astype(np.uint8)[None, :]
        r = self.solver.solve(problem, seed=0 if seed is None else int(seed), start=start, time_limit=time_limit)
        X = r.samples[:, 0, :].astype(np.int8)
        if spin:
            X = (2 * X - 1).astype(np.int8)
        return dimod.SampleSet.from_samples_bqm((X, labels), bqm, info={"status": r.status})
