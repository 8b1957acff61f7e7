"""Compile a small suite of RASP programs with tracr and export their residual streams.

Each program's residual stream is written in theorycraft's ``activations:DIR`` format to
``examples/rasp/PROGRAM`` and, multiplied by one fixed random orthogonal matrix (the residual
basis hidden), to ``examples/rasp/PROGRAM_rotated``. Deterministic: running it again rewrites the
same bytes.

    python examples/rasp/export.py            # all programs
    python examples/rasp/export.py hist       # one program
    python examples/rasp/export.py hist --out /tmp/x   # somewhere else

Token ids are tracr's own input encoding: the program's vocabulary {0, ..., V-1} maps to ids
0..V-1, BOS is id V (always at position 0), PAD (id V+1) is never used: every sequence has the
full length max_seq_len + 1. Sites: ``resid.0`` is the embedding (tokens + positions), ``resid.K``
the residual after the K-th sublayer (attention and MLP alternate: resid.1 after layer 0's
attention, resid.2 after its MLP, ...); a sublayer that writes nothing (tracr leaves empty
sublayers where a layer has no attention or no MLP) gives no site.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _programs():
    from tracr.compiler import lib
    from tracr.rasp import rasp

    def hist():
        return lib.make_hist()

    def sort():
        return lib.make_sort_unique(rasp.tokens, rasp.tokens)

    def frac_prevs():
        return lib.make_frac_prevs(rasp.numerical(rasp.Map(lambda t: t == 1, rasp.tokens)).named("is_one"))

    # name -> (program factory, vocabulary size, max_seq_len, distinct tokens per sequence, examples, text)
    return {
        "hist": (hist, 4, 6, False, 300,
                 "tracr make_hist(): hist[i] = how many tokens of the sequence equal token i"),
        "sort": (sort, 8, 5, True, 300,
                 "tracr make_sort_unique(tokens, tokens): the (distinct) tokens sorted ascending"),
        "frac_prevs": (frac_prevs, 3, 6, False, 300,
                       "tracr make_frac_prevs(tokens == 1): the fraction of tokens up to i that are 1"),
    }


def compile_program(name):
    from tracr.compiler import compiling
    make, vocab, max_seq_len, *_ = _programs()[name]
    return compiling.compile_rasp_to_model(make(), vocab=set(range(vocab)), max_seq_len=max_seq_len,
                                           compiler_bos="BOS", compiler_pad="PAD")


def sample_inputs(name):
    _, vocab, max_seq_len, distinct, n, _ = _programs()[name]
    rng = np.random.default_rng(1234)
    if distinct:
        body = np.stack([rng.permutation(vocab)[:max_seq_len] for _ in range(n)])
    else:
        body = rng.integers(0, vocab, size=(n, max_seq_len))
    bos = np.full((n, 1), vocab)  # tracr's id for BOS: right after the vocabulary
    return np.concatenate([bos, body], axis=1).astype(np.int32)


def residual_sites(model, inputs):
    """{site: [N, T, D] float32}: the embedding, then the residual after each non-empty sublayer."""
    out = model.forward(model.params, inputs)
    streams = [out.transformer_output.input_embeddings, *out.transformer_output.residuals]
    streams = [np.asarray(s, np.float32) for s in streams]
    sites = {"resid.0": streams[0]}
    for k in range(1, len(streams)):
        if not np.array_equal(streams[k], streams[k - 1]):
            sites[f"resid.{k}"] = streams[k]
    return sites


def rotation(dim, seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def write(directory: Path, inputs, sites, target, vocab_size):
    from theorycraft.targets import write_recording

    write_recording(directory, inputs, {site: np.ascontiguousarray(array, np.float32) for site, array in sites.items()},
                    target=target, vocab_size=vocab_size)


def export(name, out: Path = HERE):
    _, vocab, max_seq_len, _, _, text = _programs()[name]
    model = compile_program(name)
    inputs = sample_inputs(name)
    sites = residual_sites(model, inputs)
    # tracr numbers its labels from a process-wide counter ("hist_1:0"); drop the numbers so the
    # manifest does not depend on what else was compiled first
    labels = ", ".join(re.sub(r"_\d+(?=:|_selector_width|$)", "", lab) for lab in model.residual_labels)
    ids = f"token ids: 0..{vocab - 1} the vocabulary, {vocab} BOS (position 0); max_seq_len {max_seq_len}"
    write(out / name, inputs, sites, f"{text}; {ids}; residual dimensions: {labels}", vocab + 1)
    rot = rotation(len(model.residual_labels))
    write(out / f"{name}_rotated", inputs, {s: a @ rot for s, a in sites.items()},
          f"{text}; {ids}; residual basis hidden by a fixed random rotation", vocab + 1)
    return model, inputs, sites


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="*", help=f"default: all ({', '.join(_programs())})")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for name in args.programs or list(_programs()):
        _, _, sites = export(name, args.out)
        print(name, {s: a.shape for s, a in sites.items()}, file=sys.stderr)


if __name__ == "__main__":
    main()
