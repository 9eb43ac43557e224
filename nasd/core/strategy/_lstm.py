"""The numpy LSTM controller of the ``reinforce`` strategy, and the parts it is built from.

The parts: an LSTM cell with its backward pass, the Adam optimiser and a flat parameter layout.
The controller (:class:`LstmController`) walks a space's decision list
(:mod:`nasd.core.space.decisions`): for each ordinary decision an LSTM step reads the embedding
of the previous action (a learned start vector first) and a per-decision softmax picks an
option; the decision that completes layer ``L`` is followed by an *anchor* step whose hidden
state ``a_L`` stands for the layer. A skip decision ``(i, j)`` is a sigmoid over
``v . tanh(W_prev a_j + W_curr a_i)`` (Zoph & Le's anchor-point attention); its action does not
feed the LSTM. Backpropagation runs through the whole decision sequence by hand.

The REINFORCE controllers keep every weight in one flat float64 vector: Adam updates it in one
step, and a snapshot stores it (and Adam's moments) as little-endian bytes, which msgpack round
trips exactly. They are written in numpy rather than torch because :mod:`nasd.core` must import
no torch (the daemon runs without it; ``tests/unit/test_imports.py`` enforces the layering), and
because float64 numpy on one CPU thread with explicit arithmetic is deterministic, which replay
from the event log requires.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from nasd.core.space.decisions import Decision, check_decisions

Array = npt.NDArray[np.float64]
_DTYPE = np.dtype("<f8")


def sigmoid(z: Array) -> Array:
    """The logistic function, written through tanh so it never overflows."""
    result: Array = 0.5 * (1.0 + np.tanh(0.5 * z))
    return result


def log_softmax(logits: Array) -> Array:
    """The log-probabilities of a softmax over ``logits``, computed stably."""
    shifted = logits - logits.max()
    result: Array = shifted - np.log(np.exp(shifted).sum())
    return result


def term(logp: Array, action: int, advantage: float, entropy: float) -> float:
    """One decision's part of the objective: ``advantage * log p_a + entropy * H``."""
    return advantage * float(logp[action]) - entropy * float((np.exp(logp) * logp).sum())


def term_grad(logp: Array, action: int, advantage: float, entropy: float) -> Array:
    """The gradient of :func:`term` with respect to the logits ``z`` (``logp = log_softmax(z)``)."""
    probs = np.exp(logp)
    plogp = probs * logp
    onehot = np.zeros_like(probs)
    onehot[action] = 1.0
    return advantage * (onehot - probs) - entropy * (plogp - probs * plogp.sum())


def categorical(probs: Array, uniform: float) -> int:
    """The option whose cumulative probability first exceeds ``uniform`` (inverse CDF draw)."""
    index = int(np.searchsorted(np.cumsum(probs), uniform, side="right"))
    return min(index, probs.shape[0] - 1)


def to_bytes(values: Array) -> bytes:
    """``values`` as little-endian float64 bytes (exact, msgpack-able)."""
    return np.ascontiguousarray(values, dtype=_DTYPE).tobytes()


def from_bytes(data: bytes, size: int, what: str) -> Array:
    """The float64 vector :func:`to_bytes` wrote; ValueError if it does not hold ``size`` floats."""
    if not isinstance(data, bytes) or len(data) != size * _DTYPE.itemsize:
        raise ValueError(f"{what}: expected {size} float64 values in a snapshot")
    return np.frombuffer(data, dtype=_DTYPE).astype(np.float64)


class ParamLayout:
    """Named arrays laid out one after another in a flat vector; views are cut on demand."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.size = 0

    def add(self, name: str, *shape: int) -> None:
        """Reserve an array of ``shape`` under ``name`` at the end of the vector."""
        self._slots[name] = (self.size, shape)
        self.size += math.prod(shape)

    def view(self, flat: Array, name: str) -> Array:
        """The array ``name`` as a view into ``flat`` (writes go through)."""
        offset, shape = self._slots[name]
        return flat[offset : offset + math.prod(shape)].reshape(shape)

    def __contains__(self, name: object) -> bool:
        return name in self._slots


@dataclass(frozen=True, slots=True)
class LstmCache:
    """What one LSTM step keeps for its backward pass."""

    xh: Array  # the input and the previous hidden state, concatenated
    c_prev: Array
    gates: Array  # input, forget, candidate (tanh) and output gates, activated
    tanh_c: Array
    h: Array  # the step's output


def _gate_views(gates: Array, hidden: int) -> tuple[Array, Array, Array, Array]:
    """The four gates of a ``4H`` vector (faster than ``np.split`` for small vectors)."""
    return (
        gates[:hidden],
        gates[hidden : 2 * hidden],
        gates[2 * hidden : 3 * hidden],
        gates[3 * hidden :],
    )


def lstm_step(
    weight: Array, bias: Array, x: Array, h: Array, c: Array
) -> tuple[Array, Array, LstmCache]:
    """One LSTM step: ``(h, c)`` after reading ``x``; ``weight`` is ``(4H, len(x) + H)``."""
    hidden = h.shape[0]
    xh = np.concatenate([x, h])
    z = weight @ xh + bias
    gates = np.empty_like(z)
    gates[: 2 * hidden] = sigmoid(z[: 2 * hidden])
    gates[2 * hidden : 3 * hidden] = np.tanh(z[2 * hidden : 3 * hidden])
    gates[3 * hidden :] = sigmoid(z[3 * hidden :])
    i, f, g, o = _gate_views(gates, hidden)
    c_next = f * c + i * g
    tanh_c = np.tanh(c_next)
    h_next = o * tanh_c
    return h_next, c_next, LstmCache(xh, c, gates, tanh_c, h_next)


def lstm_step_backward(
    weight: Array, cache: LstmCache, dh: Array, dc: Array, dweight: Array, dbias: Array
) -> tuple[Array, Array, Array]:
    """Back through one :func:`lstm_step`: adds into ``dweight`` and ``dbias`` and returns the
    gradients of its input, previous hidden state and previous cell state."""
    hidden = dh.shape[0]
    i, f, g, o = _gate_views(cache.gates, hidden)
    dc_total = dc + dh * o * (1.0 - cache.tanh_c**2)
    dz = np.concatenate(
        [
            dc_total * g * i * (1.0 - i),
            dc_total * cache.c_prev * f * (1.0 - f),
            dc_total * i * (1.0 - g**2),
            dh * cache.tanh_c * o * (1.0 - o),
        ]
    )
    dweight += np.outer(dz, cache.xh)
    dbias += dz
    dxh = weight.T @ dz
    split = dxh.shape[0] - hidden
    return dxh[:split], dxh[split:], dc_total * f


class Adam:
    """Adam (Kingma & Ba, 2015) on a flat vector, minimising; its state is msgpack-able."""

    def __init__(
        self, size: int, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m: Array = np.zeros(size)
        self.v: Array = np.zeros(size)
        self.steps = 0

    def step(self, params: Array, grad: Array) -> None:
        """Move ``params`` (in place) against ``grad``."""
        self.steps += 1
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * grad * grad
        m_hat = self.m / (1.0 - self.beta1**self.steps)
        v_hat = self.v / (1.0 - self.beta2**self.steps)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state(self) -> dict[str, Any]:
        """The moments (as bytes) and the step count."""
        return {"m": to_bytes(self.m), "v": to_bytes(self.v), "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self.m = from_bytes(state["m"], self.m.size, "adam.m")
        self.v = from_bytes(state["v"], self.v.size, "adam.v")
        self.steps = int(state["steps"])


INIT_SCALE = 0.1
"""Weights start uniform in [-0.1, 0.1], biases at 0 (as ENAS's controller): near-uniform."""


class LstmController:
    """The policy: sampling, log-likelihood and its gradient over one flat weight vector."""

    def __init__(self, decisions: Sequence[Decision], hidden: int, generator: np.random.Generator):
        check_decisions(decisions)
        self.decisions = list(decisions)
        self.hidden = hidden
        layout = ParamLayout()
        layout.add("lstm.w", 4 * hidden, 2 * hidden)
        layout.add("lstm.b", 4 * hidden)
        layout.add("start", hidden)
        for k, decision in enumerate(self.decisions):
            if decision.skip is None:
                layout.add(f"emb{k}", decision.size, hidden)
                layout.add(f"out{k}.w", decision.size, hidden)
                layout.add(f"out{k}.b", decision.size)
        if any(d.skip is not None for d in self.decisions):
            layout.add("att.prev", hidden, hidden)
            layout.add("att.curr", hidden, hidden)
            layout.add("att.v", hidden)
        self.layout = layout
        self.theta: Array = generator.uniform(-INIT_SCALE, INIT_SCALE, layout.size)
        self.view("lstm.b")[:] = 0.0
        for k, decision in enumerate(self.decisions):
            if decision.skip is None:
                self.view(f"out{k}.b")[:] = 0.0

    def view(self, name: str, flat: Array | None = None) -> Array:
        """Parameter ``name`` as a view into ``flat`` (default: the weights)."""
        return self.layout.view(self.theta if flat is None else flat, name)

    def sample(self, uniform: Callable[[], float]) -> list[int]:
        """One action per decision, each drawn with one ``uniform()`` in [0, 1)."""
        return self._forward(lambda _k, probs: categorical(probs, uniform())).actions

    def objective(
        self, actions: Sequence[int], used: Sequence[bool], advantage: float, entropy: float
    ) -> float:
        """``advantage * sum log P(a_t | a_<t) + entropy * sum H_t`` over the used decisions."""
        trace = self._forward(lambda k, _probs: actions[k])
        return sum(
            (term(logp, actions[k], advantage, entropy) for k, logp, _ in trace.terms if used[k]),
            0.0,
        )

    def accumulate(
        self,
        actions: Sequence[int],
        used: Sequence[bool],
        advantage: float,
        entropy: float,
        grad: Array,
    ) -> None:
        """Add the gradient of :meth:`objective` with respect to the weights into ``grad``."""
        trace = self._forward(lambda k, _probs: actions[k])
        dh_direct = [np.zeros(self.hidden) for _ in trace.steps]  # reaching each h directly
        for k, logp, step in trace.terms:
            if not used[k]:
                continue
            dz = term_grad(logp, actions[k], advantage, entropy)
            skip = self.decisions[k].skip
            if skip is None:
                self.view(f"out{k}.w", grad)[:] += np.outer(dz, trace.steps[step].h)
                self.view(f"out{k}.b", grad)[:] += dz
                dh_direct[step] += self.view(f"out{k}.w").T @ dz
            else:  # P(yes) = sigmoid(s) = softmax([0, s])[1], so d/ds is dz[1]
                self._skip_backward(skip, trace, float(dz[1]), dh_direct, grad)
        self._lstm_backward(trace, dh_direct, grad)

    def _forward(self, pick: Callable[[int, Array], int]) -> _Trace:
        """Run the controller, ``pick(decision, probabilities)`` choosing each action."""
        weight, bias = self.view("lstm.w"), self.view("lstm.b")
        h, c = np.zeros(self.hidden), np.zeros(self.hidden)
        x, source = self.view("start"), None  # source: (decision, action) whose embedding is x
        trace = _Trace()
        for k, decision in enumerate(self.decisions):
            if decision.skip is None:
                h, c, cache = lstm_step(weight, bias, x, h, c)
                trace.steps.append(cache)
                trace.sources.append(source)
                logp = log_softmax(self.view(f"out{k}.w") @ h + self.view(f"out{k}.b"))
                trace.terms.append((k, logp, len(trace.steps) - 1))
                action = pick(k, np.exp(logp))
                x, source = self.view(f"emb{k}")[action], (k, action)
                if decision.anchor is not None:
                    h, c, cache = lstm_step(weight, bias, x, h, c)
                    trace.steps.append(cache)
                    trace.sources.append(source)
                    trace.anchors[decision.anchor] = len(trace.steps) - 1
            else:
                a_i, a_j = trace.anchor_states(decision.skip)
                u = np.tanh(self.view("att.prev") @ a_j + self.view("att.curr") @ a_i)
                logp = log_softmax(np.array([0.0, float(self.view("att.v") @ u)]))
                trace.terms.append((k, logp, -1))
                action = pick(k, np.exp(logp))
            trace.actions.append(int(action))
        return trace

    def _skip_backward(
        self,
        skip: tuple[int, int],
        trace: _Trace,
        ds: float,
        dh_direct: list[Array],
        grad: Array,
    ) -> None:
        """Back through one anchor-attention score ``s = v . tanh(W_prev a_j + W_curr a_i)``."""
        a_i, a_j = trace.anchor_states(skip)
        w_prev, w_curr = self.view("att.prev"), self.view("att.curr")
        u = np.tanh(w_prev @ a_j + w_curr @ a_i)
        self.view("att.v", grad)[:] += ds * u
        dq = ds * self.view("att.v") * (1.0 - u**2)
        self.view("att.prev", grad)[:] += np.outer(dq, a_j)
        self.view("att.curr", grad)[:] += np.outer(dq, a_i)
        dh_direct[trace.anchors[skip[1]]] += w_prev.T @ dq
        dh_direct[trace.anchors[skip[0]]] += w_curr.T @ dq

    def _lstm_backward(self, trace: _Trace, dh_direct: list[Array], grad: Array) -> None:
        """Back through the LSTM steps in reverse, routing each input's gradient to its source."""
        weight = self.view("lstm.w")
        dweight, dbias = self.view("lstm.w", grad), self.view("lstm.b", grad)
        dh_next, dc_next = np.zeros(self.hidden), np.zeros(self.hidden)
        for index in reversed(range(len(trace.steps))):
            dx, dh_next, dc_next = lstm_step_backward(
                weight, trace.steps[index], dh_direct[index] + dh_next, dc_next, dweight, dbias
            )
            source = trace.sources[index]
            if source is None:
                self.view("start", grad)[:] += dx
            else:
                self.view(f"emb{source[0]}", grad)[source[1]] += dx


@dataclass(slots=True)
class _Trace:
    """One run of the controller: its LSTM steps, per decision its log-probabilities, actions."""

    steps: list[LstmCache] = field(default_factory=list)
    sources: list[tuple[int, int] | None] = field(default_factory=list)  # each step's input
    anchors: dict[int, int] = field(default_factory=dict)  # layer -> index of its anchor step
    terms: list[tuple[int, Array, int]] = field(default_factory=list)  # (k, log p, step or -1)
    actions: list[int] = field(default_factory=list)

    def anchor_states(self, skip: tuple[int, int]) -> tuple[Array, Array]:
        """The anchors' hidden states ``(a_i, a_j)`` of skip decision ``(i, j)``."""
        return self.steps[self.anchors[skip[0]]].h, self.steps[self.anchors[skip[1]]].h
