"""``builtin:addition``: a GPT-2 (transformers' own classes) trained on multi-digit addition,
shipped as a Hugging Face directory and loaded through the ``hf:`` adapter, so that its sites are
the TransformerLens-style names and its attention patterns are sites.

A problem is a sequence of character tokens: the two operands zero-padded to DIGITS digits,
most significant first, then the sum's DIGITS + 1 digits *least significant first* (a small
transformer learns addition in that order much faster: each answer digit then needs only its own
column and the carry out of the column below, which the digit it has just written tells it):

    1 2 3 4 5 + 0 9 8 7 6 = 1 2 2 2 2 0      # 12345 + 09876 = 022221, written backwards

The model reads all but the last answer digit (ANSWER_START - 1 .. T - 1 predict the answer), and
splicing is judged by next-token loss, KL and top-1 at the answer positions only: the operands are
random, so predicting them is not what the model was trained to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._base import Shift, Task

DIGITS = 5  # digits per operand
PLUS, EQUALS = 10, 11  # token ids; the digits are their own ids
VOCAB = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=")
ANSWER = DIGITS + 1  # digits of the sum
ANSWER_START = 2 * DIGITS + 2  # the position of the sum's first (units) digit in the full sequence
LENGTH = ANSWER_START + ANSWER  # the full sequence; the model reads LENGTH - 1 tokens
WEIGHTS = Path(__file__).resolve().parent / "weights" / "addition"


def encode(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Operands [N] -> the full problems [N, LENGTH] (int32), the answer written backwards."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    high_first = 10 ** np.arange(DIGITS - 1, -1, -1)
    low_first = 10 ** np.arange(ANSWER)
    n = len(a)
    return np.concatenate([(a[:, None] // high_first) % 10, np.full((n, 1), PLUS),
                           (b[:, None] // high_first) % 10, np.full((n, 1), EQUALS),
                           ((a + b)[:, None] // low_first) % 10], axis=1).astype(np.int32)


def operands(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two operands of problems [N, >= 2 * DIGITS + 1] (the full sequence or what the model reads)."""
    weights = 10 ** np.arange(DIGITS - 1, -1, -1)
    tokens = np.asarray(tokens, np.int64)
    return tokens[:, :DIGITS] @ weights, tokens[:, DIGITS + 1:2 * DIGITS + 1] @ weights


def answer_digits(tokens: np.ndarray) -> np.ndarray:
    """The true sum's digits [N, ANSWER], least significant first, computed from the operands."""
    a, b = operands(tokens)
    return ((a + b)[:, None] // 10 ** np.arange(ANSWER)) % 10


def carries(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The carry into each column [N, ANSWER] (column 0, the units, never has one)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    low = 10 ** np.arange(ANSWER)
    column_sum = (a[:, None] % low) + (b[:, None] % low)  # the operands below each column
    return (column_sum >= low).astype(np.int64)


def longest_carry_chain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The longest run of consecutive columns that receive a carry [N]: a carry born in one column
    and passed on through columns whose digits sum to 9 has a chain as long as the run."""
    carry = carries(a, b)
    run = np.zeros(len(carry), np.int64)
    best = np.zeros(len(carry), np.int64)
    for column in range(ANSWER):
        run = np.where(carry[:, column] == 1, run + 1, 0)
        best = np.maximum(best, run)
    return best


def _from_digits(digits: np.ndarray) -> np.ndarray:
    """Digits [N, DIGITS], least significant first -> numbers [N]."""
    return np.asarray(digits, np.int64) @ (10 ** np.arange(digits.shape[1]))


def uniform_operands(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 10 ** DIGITS, n), rng.integers(0, 10 ** DIGITS, n)


def carry_chain_operands(n: int, rng: np.random.Generator, shortest: int = 1,
                         longest: int = DIGITS - 1) -> tuple[np.ndarray, np.ndarray]:
    """A carry born in a random column (its digits sum to 10 or more) and passed on through a run
    of ``shortest``..``longest`` columns above it whose digits sum to 9; the other columns random."""
    a = rng.integers(0, 10, (n, DIGITS))
    b = rng.integers(0, 10, (n, DIGITS))
    length = rng.integers(shortest, longest + 1, n)
    start = rng.integers(0, DIGITS - length)  # the column the carry is born in: the run fits above it
    rows = np.arange(n)
    a[rows, start] = rng.integers(1, 10, n)
    b[rows, start] = rng.integers(10 - a[rows, start], 10)  # a + b >= 10
    columns = np.arange(DIGITS)
    nines = (columns[None] > start[:, None]) & (columns[None] <= (start + length)[:, None])
    b = np.where(nines, 9 - a, b)
    return _from_digits(a), _from_digits(b)


def _problems(make):
    def dataset(n: int | None, seed_or_rng) -> np.ndarray:
        rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
        a, b = make(n or 4_096, rng)
        return encode(a, b)[:, :-1]  # the model reads all but the last answer digit
    return dataset


def _mixture(n, rng):
    """The training distribution: three quarters uniform operands, a quarter with a carry chain
    of 1 to DIGITS - 1 columns (random operands rarely pass a carry on far: through k columns
    whose digits sum to 9 with probability about 0.1^k)."""
    chained = rng.random(n) < 0.25
    a, b = uniform_operands(n, rng)
    ca, cb = carry_chain_operands(n, rng)
    return np.where(chained, ca, a), np.where(chained, cb, b)


def _zeros(n, rng, p=0.7):
    """Each digit of each operand 0 with probability p, else uniform."""
    a = np.where(rng.random((n, DIGITS)) < p, 0, rng.integers(0, 10, (n, DIGITS)))
    b = np.where(rng.random((n, DIGITS)) < p, 0, rng.integers(0, 10, (n, DIGITS)))
    return _from_digits(a), _from_digits(b)


def _no_carry(n, rng):
    """Every column's digits sum to 9 or less."""
    a = rng.integers(0, 10, (n, DIGITS))
    b = np.floor(rng.random((n, DIGITS)) * (10 - a)).astype(np.int64)
    return _from_digits(a), _from_digits(b)


def _short_and_long(n, rng):
    """One operand below 100 (three leading zeros), the other of full length, in random order."""
    big, small = rng.integers(0, 10 ** DIGITS, n), rng.integers(0, 100, n)
    swap = rng.random(n) < 0.5
    return np.where(swap, small, big), np.where(swap, big, small)


problems = _problems(_mixture)  # the builtin's dataset: what the model was trained on

SHIFTS = {  # well-formed problems off the training mix
    "long-carries": ("a carry passed on through 4 columns whose digits sum to 9 (in the training mix: a "
                     "quarter of problems have a chain of 1-4 columns; uniform operands reach 4 about 1 in 10^4)",
                     _problems(lambda n, rng: carry_chain_operands(n, rng, shortest=DIGITS - 1))),
    "zeros": ("each operand digit 0 with probability 0.7 (trained: uniform digits)", _problems(_zeros)),
    "no-carry": ("no column carries: every column's digits sum to 9 or less", _problems(_no_carry)),
    "short-operand": ("one operand below 100 (three leading zeros), the other of full length",
                      _problems(_short_and_long)),
}


def _miswritten(n: int | None, seed_or_rng) -> np.ndarray:
    """Problems of the training mix with one digit of the answer written so far (the sum's digits
    0-4, which the model reads) replaced by a wrong one, as if the model had slipped."""
    rng = seed_or_rng if isinstance(seed_or_rng, np.random.Generator) else np.random.default_rng(seed_or_rng)
    tokens = problems(n, rng).copy()
    rows = np.arange(len(tokens))
    where = rng.integers(ANSWER_START, LENGTH - 1, len(tokens))
    tokens[rows, where] = (tokens[rows, where] + rng.integers(1, 10, len(tokens))) % 10
    return tokens


# Not problems a model writes itself: the answer read so far is wrong. The carry into the next
# column is then what the operands say (a cascade) or what the wrong digit says (a + b - written
# >= 9, the shortcut that is exact on right answers): which one the model follows shows here.
CORRUPTED = {
    "miswritten": ("one digit of the answer so far (digits 0-4, which the model reads) is wrong; the answer is "
                   "still judged against the true sum", _miswritten),
}


def answer_rows(logits: np.ndarray, tokens: np.ndarray):
    """The next-token logits at the positions that predict the answer's digits, and those digits
    (from the operands, so that the last digit, which the model does not read, is judged too)."""
    rows = logits[:, ANSWER_START - 1:ANSWER_START - 1 + ANSWER]  # [N, ANSWER, vocab]
    return rows.reshape(-1, logits.shape[-1]), answer_digits(tokens).reshape(-1)


TASK = Task("logits", answer_rows, answers=True)


def load(weights: Path = WEIGHTS):
    """The trained model through the hf: adapter, with its problems, shifts and answer-position task."""
    from ._base import TargetError
    from ._hf import load_hf_model

    if not (weights / "config.json").exists():
        raise TargetError(f"weights of builtin:addition are missing at {weights}; train them with "
                          f"'python examples/train_targets.py addition'")
    shifts = {name: Shift(description, fn) for name, (description, fn) in {**SHIFTS, **CORRUPTED}.items()}
    return load_hf_model(str(weights), problems=problems, shifts=shifts, task=TASK, name="builtin:addition")
