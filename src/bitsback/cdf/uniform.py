"""Uniform symbols over [0, 2^prec): thin wrappers over the C fast path."""
import numpy as np


def push(msgs, symbols, prec):
    """Push uint[n, S] symbols, each uniform over [0, 2^prec)."""
    msgs.push_uniform(np.ascontiguousarray(symbols, dtype=np.uint32), int(prec))


def pop(msgs, n, S, prec):
    """Pop uint32[n, S] uniform symbols (column 0 first)."""
    return msgs.pop_uniform(int(n), int(S), int(prec))
