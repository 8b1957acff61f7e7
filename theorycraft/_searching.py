"""The front of ``search``: the start theory, its capture and vocabulary, the judge, the search,
and what it writes (re-exported by theorycraft.api)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from theorycraft._captures import _activations, _data, document_model, given
from theorycraft._metrics import Metrics
from theorycraft.configs import CaptureConfig, FitConfig, SearchConfig, document
from theorycraft.errors import FitError
from theorycraft.files import output_directory
from theorycraft.spec import Theory, load_theory
from theorycraft.store import ActivationSet

if TYPE_CHECKING:
    from theorycraft.refine import SearchResult


@document(SearchConfig, "config", budget_bits=None, budget_minutes=None, tries=None, target_coverage=None,
          judge_cache=None)
@document(FitConfig, "fit", seed=None, max_steps=None, learning_rate=None, batch_size=None, max_memory=None)
@document(CaptureConfig, "data", n=None, data_seed=None, dtype=None, seq_len=None, device=None)
@document_model()
def search(start: Theory | str, *, vocabulary: str | None = None, config: SearchConfig | None = None,
           fit: FitConfig | None = None, data: CaptureConfig | None = None, out_dir=None, compare: str | None = None,
           cache_dir=None, trust_code: bool = False, log=print, include_paths: Sequence[str] = (),
           progress: bool = True, acts: ActivationSet | str | Path | None = None, texts: Iterable[str] | None = None,
           budget_bits: float | None = None, budget_minutes: float | None = None, tries: int | None = None,
           target_coverage: float | None = None, judge_cache: int | str | None = None, seed: int | None = None,
           max_steps: int | None = None, learning_rate: float | None = None, batch_size: int | None = None,
           max_memory: int | str | None = None, n: int | None = None, data_seed: int | None = None,
           dtype: str | None = None, seq_len: int | None = None, target=None, dataset=None,
           output: str | None = None, device: str | None = None) -> "SearchResult":
    """Grow and prune a theory from ``start`` by held-out MDL, with candidates from ``vocabulary``.

    Parameters
    ----------
    start : Theory or str
        The theory to start from (its sites; components optional), or its file.
    vocabulary : str, optional
        A vocabulary YAML file of candidate components; default generated for the target's sites.
    config : SearchConfig, optional
        Budgets, tries per step, the scaling curve's target coverage, the judge's cache (see
        ``theorycraft.configs.SearchConfig``); default its defaults.
    fit : FitConfig, optional
        How each candidate (and the found theory) is fitted: seed, Adam's steps, learning rate and
        batch size, mode, memory bound; without its progress bars. Default its defaults.
    data : CaptureConfig, optional
        The capture to search on when ``acts`` is not given, as for ``infer``.
    out_dir : str or Path, optional
        Where the found theory, the trail, its plot, ``metrics.jsonl`` and the fitted artifact go;
        default ``runs/search-THEORY_NAME``.
    compare : str, optional
        A theory file over the same sites, judged the same way, for reference.
    cache_dir : str or Path, optional
        The activation store.
    trust_code : bool
        Let ``torch:`` targets and ``kind: module:attr`` components run their Python.
    log : callable, optional
        Called with each line of the search's log.
    include_paths : sequence of str
        Directories the theory files' includes may read from, besides their own.
    progress : bool
        A bar over the steps (and one over the captures) on stderr.
    acts : ActivationSet, str or Path, optional
        A capture to search on (or its key or directory), as for ``infer``.
    texts : iterable of str, optional
        ``hf:`` targets: the texts to capture instead of the target's own data.
    {model}
    {config: SearchConfig}
    {fit: FitConfig}
    {data: CaptureConfig}

    Returns
    -------
    SearchResult
        The trail, the final theory's totals, its refitted scorecard, the scaling curve and the
        comparison, with ``out`` the directory written.
    """
    from theorycraft.inference.engine import site_shapes
    from theorycraft.refine import (Judge, default_vocabulary, explained_sites, load_vocabulary, parse_vocabulary,
                                    search as run, write_search)

    config = SearchConfig.of(config, budget_bits=budget_bits, budget_minutes=budget_minutes, tries=tries,
                             target_coverage=target_coverage, judge_cache=judge_cache)
    fit = FitConfig.of(fit, seed=seed, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
                       max_memory=max_memory, progress=False)  # one bar, over the search's steps
    data = _data(data, acts, texts, n=n, seed=data_seed, dtype=dtype, seq_len=seq_len, device=device)
    path = start if isinstance(start, str) else "<theory>"
    theory = load_theory(start, trust_code=trust_code, include_paths=include_paths) if isinstance(start, str) else start
    theory, made = given(theory, target, dataset, output)
    acts = _activations(theory, acts, data, texts=texts, cache_dir=cache_dir, trust_code=trust_code,
                        progress=progress, log=log, target=made)
    if vocabulary:
        vocab = load_vocabulary(vocabulary, theory, trust_code=trust_code)
    else:
        _vocabulary_known(theory, acts)
        text = default_vocabulary(theory, site_shapes(theory, acts.sites), acts.inputs())
        vocab = parse_vocabulary(text, "<default vocabulary>", theory)
    judge = Judge(theory, acts, explained_sites(theory, vocab), fit, cache_bytes=config.judge_cache)
    out = output_directory(out_dir or Path("runs") / f"search-{theory.name}")
    result = run(theory, acts, vocab, judge=judge, budget_bits=config.budget_bits,
                 budget_seconds=config.budget_minutes * 60 if config.budget_minutes else None, tries=config.tries,
                 log=log, progress=progress, metrics=Metrics(out))
    reference = None
    if compare:
        judged = judge.assess(_same_sites(load_theory(compare, trust_code=trust_code, include_paths=include_paths), theory, compare))
        reference = {"theory": compare, "validation": judged.selection, "test": judged.report, "params": judged.params}
    return write_search(result, judge, out, start_path=path, target_coverage=config.target_coverage,
                        config=fit, reference=reference)



def _vocabulary_known(theory: Theory, acts: ActivationSet) -> None:
    """The default search vocabulary has tables of the input's tokens, sized by the target's
    vocabulary: a token target that declares none is refused before any fit, saying how to declare it."""
    import numpy as np

    if acts.vocab_size is None and np.issubdtype(acts.inputs().dtype, np.integer):
        raise FitError(f"{theory.target} declares no vocabulary, and the default search vocabulary has tables of its "
                       f"tokens: return theorycraft.targets.UserModel(module, dataset_fn, vocab_size=V) from the "
                       f"factory (V token ids), or pass --vocabulary VOCAB.yaml with a size on each lookup")


def _same_sites(theory: Theory, start: Theory, path: str) -> Theory:
    if theory.target != start.target or any(start.sites.get(n) != s for n, s in theory.sites.items()):
        raise FitError(f"{path}: a theory to compare with must have the start's target and sites "
                       f"({start.target}: {', '.join(start.sites)})")
    return theory
