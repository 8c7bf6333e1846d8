"""Shared by the A/B scripts: time several codecs on the same images, alternating."""
import time


def alternating_times(codecs: dict, x, blobs: dict, repeats: int) -> dict:
    """{key: {"compress": [s, ...], "decompress": [s, ...]}}: each codec compresses x and
    decompresses blobs[key], the keys in order on even repeats and reversed on odd ones,
    so that the machine's drift falls on all of them alike."""
    times = {k: {"compress": [], "decompress": []} for k in codecs}
    keys = list(codecs)
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            t = time.perf_counter()
            codecs[k].compress(x)
            times[k]["compress"].append(time.perf_counter() - t)
            t = time.perf_counter()
            codecs[k].decompress(blobs[k])
            times[k]["decompress"].append(time.perf_counter() - t)
    return times
