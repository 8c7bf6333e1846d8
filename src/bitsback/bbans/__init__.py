"""The coding core: BB-ANS over lanes and shards (numpy, numba CDFs, onnxruntime, the C coder).

    model        an exported model (manifest -> shape, levels, latent, precision, hash)
    likelihoods  the families p(x | decoder outputs): push / pop / code length, registry
    plan         lanes and shards from N and the settings; where each image sits in a group
    step         the BB-ANS step on a set of lanes, and the posterior (encoder, K steps)
    shards       coding groups of shards in lockstep, with their checks

Never imports torch at import time: only ``step`` does, lazily, when ``k_steps > 0``.
"""
