"""The benchmark's suites: each target, its reference theories (from ``examples/``), how hard to
work on it and which rivals it adds beyond the common baselines (``baselines.py``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Suite:
    """One target of the benchmark and how hard to work on it."""

    target: str
    references: tuple[str, ...]  # theory files in examples/
    n: int | None = None  # examples to capture (None: the target's dataset)
    n_quick: int | None = None
    sae: tuple[tuple[int, int], ...] = ((2, 4), (8, 16))  # (width multiple, k)
    sae_quick: tuple[tuple[int, int], ...] = ((2, 4),)
    steps: int = 2000  # Adam steps for what has no closed form
    steps_quick: int = 300
    batch_size: int = 512  # examples per Adam step (a site over positions has T rows per example)
    mechanism_known: bool = True  # its reference theories must come first (the benchmark's validity)
    shift: str | None = None  # the named shift every row is also scored on (``theorycraft shifts TARGET``)
    n_shift: int | None = 2048  # examples of the shifted capture (None: the shift's dataset)
    # (site hook, its layer's MLP input hook): a transcoder rival per pair, at the SAEs' settings
    mlp_inputs: tuple[tuple[str, str], ...] = ()
    # theory files in examples/ that a search found, each fitted and scored beside the first
    # reference (family "found", its interventions); one not there is skipped, and says so
    found: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.target.split(":", 1)[1]


SUITES = (
    # modular addition: the pairs the model never trained on; scored where new to the fit too
    Suite("builtin:modadd-p113", ("modadd_fourier.yaml",), shift="held-out", n_shift=None),
    Suite("builtin:superposition", ("superposition.yaml",), steps=4000, steps_quick=2000, shift="dense"),
    Suite("builtin:induction", ("induction.yaml",), steps_quick=500, shift="short-repeats"),
    # 5-digit addition (issue 28): a hand theory of a trained network, and what the search found
    Suite("builtin:addition", ("addition.yaml",), n=4096, n_quick=1024, steps=1000, steps_quick=300,
          batch_size=256, shift="long-carries", mlp_inputs=(("blocks.0.hook_resid_post", "transformer.h.0.ln_2:input"),
                                                            ("blocks.1.hook_resid_post", "transformer.h.1.ln_2:input")),
          found=("addition_found.yaml",), mechanism_known=False),
    Suite("hf:minilm", ("minilm_tokens.yaml", "minilm_mechanism.yaml"), n=256, n_quick=48,
          sae=((2, 16), (4, 32)), sae_quick=((2, 16),), steps=600, steps_quick=150, batch_size=16,
          mechanism_known=False),
)
