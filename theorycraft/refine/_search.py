"""Theory search: grow a theory greedily where it buys bits, prune what does not pay.

Each step ranks every candidate of the vocabulary by a cheap estimate (``_proxy``: the ridge gain
of its features on the current residual, from per-candidate sufficient statistics computed in
batches under jit), then fits (on the training split) and scores the best few for real: held-out MDL on the
*validation* split (the theory's bits + the validation residual's bits, ``theorycraft.scoring``).
The candidate that lowers that total most is taken; then every part of the theory is offered for
removal, and a removal that lowers it is taken too. The search stops when nothing pays, or at its
budget: the time budget is checked between fits and before every Adam step, so the step in flight
stops at it and the theory last accepted is kept. The test split is only reported: every step
records both totals.

Totals are comparable across steps because the sites being explained stay fixed: a site the
theory does not predict yet is sent as its training mean plus the residual around it.

Greedy acceptance can lock in a linear map between recorded sites (the residual stream keeps
the embedding: a map from it explains most of every later site at once), and with it the site
it reads as a declared input; the computation that explains both never pays for itself one
step at a time beside it. So when greedy growth stops on its own, the search changes its mind
(``change_mind``): it drops every such map, grows again from what remains with candidates that
compute from the input alone, and keeps whichever of the two theories has the lower
*free-running* validation total (a theory built from the input is meant to run free: each site
predicted from the input, not from the recorded sites before it). That is taken where every
site the maps predict has a template that computes it, and never under a bit budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from theorycraft.inference.engine import Stopped
from theorycraft.configs import bytes_text
from theorycraft._metrics import Metrics
from theorycraft.spec import Theory, TheoryError

from . import _proxy
from ._propose import proposals
from ._judge import Assessment, Judge, Totals
from ._moves import neighbours, removals, rewritten, splits, takeovers
from ._vocabulary import Candidate, Vocabulary, drop_reads, candidates, rebuild, spec_of

PROXY_SAMPLE = 4096  # training examples the candidate estimates are computed on


@dataclass(frozen=True)
class Step:
    """One accepted step of a search, with its code on validation (what chose it) and on test."""

    action: str
    theory: str  # the YAML, over the judge's sites: what was fitted and judged
    selection: Totals
    report: Totals
    params: int
    seconds: float

    def as_dict(self) -> dict:
        return {"action": self.action, "validation": self.selection.as_dict(), "test": self.report.as_dict(),
                "params": self.params, "seconds": round(self.seconds, 1), "theory": self.theory}

    @classmethod
    def from_json(cls, data: dict) -> "Step":
        return cls(data["action"], data["theory"], Totals.from_json(data["validation"]),
                   Totals.from_json(data["test"]), data["params"], data["seconds"])


@dataclass(frozen=True)
class Found:
    """What a search leaves in memory: the found theory (fitted, judged), the accepted steps."""

    best: Assessment
    trail: tuple[Step, ...]
    stopped: str
    vocabulary: Vocabulary


def shortlist(ranked: list, tries: int) -> list:
    """The candidates worth a real fit: the best estimate of each template (estimates compare
    poorly across kinds), then the best of the rest, ``tries`` in all, best estimate first."""
    firsts = list({c.template: (c, g) for c, g in reversed(ranked)}.values())
    chosen = sorted(firsts, key=lambda cg: -cg[1])[:tries]
    rest = [cg for cg in ranked if cg not in chosen]
    return sorted(chosen + rest[:tries - len(chosen)], key=lambda cg: -cg[1])


def explained_sites(start: Theory, vocab: Vocabulary) -> list[str]:
    """The sites a search explains: those its vocabulary predicts and those the start predicts."""
    return list(dict.fromkeys(vocab.sites + [s for s in start.sites if start.predictors(s)]))


def maps_of(theory: Theory) -> list[str]:
    """The components that take a recorded site as their input: maps between sites (the site they
    read is declared an input where nothing predicts it)."""
    return [n for n, c in theory.components.items() if set(c.reads()) & set(theory.sites)]


def computes(cand: Candidate, sites) -> bool:
    """Whether a candidate reads no recorded site: it computes from the input and the theory's variables."""
    return not set(spec_of(cand.data).reads()) & set(sites)


def replaceable(theory: Theory, vocab: Vocabulary) -> list[str]:
    """The maps between recorded sites a search may try to replace: all of them, where every site
    they predict has a template, or is a grammar site, that computes it from the input."""
    maps = maps_of(theory)
    computing = {t.site for t in vocab.templates.values()
                 if computes(Candidate(t.name, t.kind, t.site, t.name, next(t.items())[0], {}, {}), theory.sites)}
    computing |= set(vocab.grammar.sites if vocab.grammar else ())  # the grammar computes at its sites
    predicted = {s for n in maps for s in theory.components[n].predicted()}
    return maps if maps and predicted <= computing else []


def without(theory: Theory, names: list[str]) -> Theory:
    """``theory`` with components ``names`` gone (and what only they fed)."""
    data = theory.to_dict()
    components = dict(data["components"])
    for name in names:
        components.pop(name)
        drop_reads(components, name)
    return rebuild({**data, "components": components})


def rethought(greedy: Assessment, alternative: Assessment) -> bool:
    """Whether the alternative replaces the greedy theory: a lower free-running validation total
    (theories here are meant to run free: the alternative reads no recorded site)."""
    return alternative.selection.bits_total_free < greedy.selection.bits_total_free


def search(start: Theory, acts, vocab: Vocabulary, *, judge: Judge | None = None, budget_bits: float | None = None,
           budget_seconds: float | None = None, tries: int = 4, log: Callable[[str], None] = lambda s: None,
           progress: bool = True, metrics: Metrics | None = None, rethink: bool = True,
           clock: Callable[[], float] = time.time) -> Found:
    """Grow ``start`` greedily by held-out MDL (see the module's doc). ``progress``: a bar on
    stderr over each step's fits, with the best candidate so far and the step's ETA (shown only
    on a terminal). ``metrics``: a ``search`` record of each step (the start is step 0).
    ``rethink=False``: greedy growth alone, never changing its mind (for comparison). ``clock``:
    what ``budget_seconds`` counts (wall time; ``time.process_time`` counts this process's CPU
    time, for a machine shared with other work)."""
    from theorycraft._progress import above, bar as progress_bar

    began, started = time.time(), clock()
    vocab = vocab.beside(start)
    judge = judge or Judge(start, acts, explained_sites(start, vocab))
    trail: list[Step] = []
    state: dict[str, str] = {}  # component -> the template it came from
    bar = progress_bar(0, unit="fit", shown=None if progress else False, leave=False)
    write = above(bar, log)

    def record(action: str, a: Assessment) -> None:
        trail.append(Step(action, judge.judged(a.theory).to_yaml(), a.selection, a.report, a.params,
                          time.time() - began))
        v = a.selection
        (metrics or Metrics()).write("search", len(trail) - 1, action=action, bits_total=v.bits_total,
                                     bits_theory=v.bits_theory, coverage=v.coverage, coverage_free=v.coverage_free,
                                     test_coverage=a.report.coverage, params=a.params, seconds=time.time() - began)
        write(f"[{time.time() - began:6.0f}s] {action}: validation {v.bits_total:,.0f} bits (theory "
              f"{v.bits_theory:,.0f}), coverage {v.coverage:.4f} (free {v.coverage_free:.4f}); "
              f"test coverage {a.report.coverage:.4f}; {a.params:,} params; {judge.cache_text()}")

    def out_of_time() -> bool:
        return budget_seconds is not None and clock() - started > budget_seconds

    stop = out_of_time if budget_seconds is not None else None  # asked inside a step's estimates and fits

    def check_time() -> None:  # between the parts of a step: a step in flight stops at the budget
        if out_of_time():
            raise Stopped("the time budget ran out between fits")

    lead = {"action": "", "bits": float("inf")}  # the best fit of the step so far, for the bar

    def step(what: str, options: list) -> None:
        """The bar over one step's fits: ``options`` of them."""
        bar.reset(total=len(options))
        bar.set_description(f"step {len(trail)}: {what}")
        lead.update(action="", bits=float("inf"))

    def judged(action: str, theory: Theory, base: Assessment) -> Assessment:
        check_time()
        a = judge.assess(theory, base, stop=stop)
        if a.selection.bits_total < lead["bits"]:
            lead.update(action=action, bits=a.selection.bits_total)
        bar.set_postfix_str(f"best {lead['action']} {lead['bits'] - base.selection.bits_total:+,.0f} bits", refresh=False)
        bar.update(1)
        return a

    write(f"judge cache: parameters of at most {bytes_text(judge.cache_bytes)} of judged theories kept")
    current = judge.assess(start)
    record("start", current)
    best = {"now": current}  # the latest accepted theory, kept if the search is interrupted

    branch: dict = {"steps": None}  # while rethinking: the steps of the alternative, recorded only if it wins

    def accept(action: str, a: Assessment) -> None:
        best["now"] = a
        if branch["steps"] is None:
            record(action, a)
        else:
            branch["steps"].append(action)
            write(f"  [rethinking] {action}: validation {a.selection.bits_total:,.0f} bits, coverage "
                  f"{a.selection.coverage:.4f}; {a.params:,} params")

    def prune(protect: str = "") -> None:
        while not out_of_time():
            offered = removals(best["now"].theory, protect) + splits(best["now"].theory)
            step("pruning", offered)
            options = [(action, judged(action, t, best["now"])) for action, t in offered]
            if not options:
                return
            action, smaller = min(options, key=lambda o: o[1].selection.bits_total)
            if smaller.selection.bits_total >= best["now"].selection.bits_total:
                return
            accept(action, smaller)

    def grow(allowed: Callable[[Candidate], bool] = lambda c: True) -> str:
        prune()
        rng = np.random.default_rng(0)
        memo: dict = {}  # estimates on site residuals a step left unchanged are kept (``_proxy``)
        while not out_of_time():
            current = best["now"]
            train = judge.examples.train
            rows = np.sort(rng.choice(train, min(PROXY_SAMPLE, len(train)), replace=False))
            offered = [c for c in candidates(vocab, current.theory, state=state) + proposals(vocab, current, judge, rows, write)
                       if allowed(c)]
            if not offered:
                return "the vocabulary is exhausted"
            step("estimating", [])
            ranked = shortlist(_proxy.rank(offered, current, judge, rows, stop=stop, memo=memo), tries)
            write("  best estimates: " + ", ".join(f"{c.description} {g:+,.0f}" for c, g in ranked))
            step("fitting the best estimates", ranked)
            chosen = None
            for cand, _ in ranked:
                a = judged(cand.description, cand.apply(current.theory), current)
                if budget_bits is not None and a.selection.bits_theory > budget_bits:
                    continue
                if a.selection.bits_total < (chosen[1] if chosen else current).selection.bits_total:
                    chosen = (cand, a)
            if chosen is None:
                return ("nothing within the bit budget pays for itself" if budget_bits is not None
                        else "nothing in the vocabulary pays for itself")
            cand, a = chosen
            for old in cand.replaces:
                state.pop(old, None)
            state[cand.name] = cand.template
            accept(f"add {cand.description}", a)
            prune(protect=cand.name)
        return "time budget spent"

    def change_mind() -> str:
        """Change its mind about the maps between recorded sites (and the inputs they declare): the
        theory without them, grown again from what the input computes alone, replaces the greedy
        one if its free-running validation total is lower (``rethought``)."""
        main, main_state = best["now"], dict(state)
        maps = replaceable(main.theory, vocab)
        if not maps or budget_bits is not None:
            return ""
        write(f"rethinking: {', '.join(maps)} (maps between recorded sites) replaced by computed variables")
        branch["steps"] = []

        def choose() -> str:
            steps, branch["steps"] = branch["steps"], None
            alternative = best["now"]
            if not rethought(main, alternative):
                best["now"] = main
                state.clear()
                state.update(main_state)
                return (f"; kept {', '.join(maps)}: without them {alternative.selection.bits_total_free:,.0f} free-running "
                        f"validation bits against {main.selection.bits_total_free:,.0f}")
            record(f"replace {', '.join(maps)} by computed variables: " + "; ".join(steps), alternative)
            return f"; replaced {', '.join(maps)} by computed variables"

        try:
            for name in maps:
                state.pop(name, None)
            step("rethinking", [None])
            best["now"] = judged(f"remove {', '.join(maps)}", without(main.theory, maps), main)
            grow(allowed=lambda c: computes(c, main.theory.sites))
        except (Stopped, KeyboardInterrupt):  # the better of the two so far is kept
            choose()
            raise
        return choose()

    def polish() -> str:
        """Each variable the theory holds, oldest first, rewritten one change away (a comparison
        turned into another, a constant moved by one: ``_grammar.neighbours``) where that lowers
        the validation total: greedy growth takes the first variable that pays, and a close
        variant that pays more can only arrive once it is held. Then, while one pays, a component
        taken over by another's extension to its sites (``takeovers``): a joint table kept from
        early growth replaced by a table of a variable found later."""
        done = []
        if vocab.grammar is None:
            return ""
        for name in list(best["now"].theory.variables):
            theory = best["now"].theory
            if out_of_time() or name not in theory.variables:
                continue
            held = {str(v) for v in theory.variables.values()}
            offered = []
            for new, text in neighbours(name, str(theory.variables[name])):
                if new not in theory.variables and text not in held:
                    try:
                        offered.append((f"rewrite {name} as {new} = {text}", rewritten(theory, name, new, text)))
                    except (TheoryError, ValueError):
                        continue
            step("polishing", offered)
            options = []
            for action, t in offered:
                try:
                    options.append((action, judged(action, t, best["now"])))
                except TheoryError:  # a table too small for the new values, say
                    continue
            if options:
                action, a = min(options, key=lambda o: o[1].selection.bits_total)
                if a.selection.bits_total < best["now"].selection.bits_total:
                    accept(action, a)
                    done.append(action.split(" = ")[0].removeprefix("rewrite "))
                    prune()
        while not out_of_time():  # one component taken over by another's extension, best first
            offered = takeovers(best["now"].theory)
            step("polishing", offered)
            options = []
            for action, t in offered:
                try:
                    options.append((action, judged(action, t, best["now"])))
                except TheoryError:
                    continue
            if not options:
                break
            action, a = min(options, key=lambda o: o[1].selection.bits_total)
            if a.selection.bits_total >= best["now"].selection.bits_total:
                break
            accept(action, a)
            done.append(action.removeprefix("replace "))
            prune()
        return f"; rewrote {', '.join(done)}" if done else ""

    try:
        stopped = grow()
        if rethink and not stopped.startswith("time budget"):
            stopped += change_mind()
            stopped += polish()
    except Stopped:  # mid-step: that step's fits are dropped, the theory last accepted is the result
        stopped = f"time budget spent ({budget_seconds:g} s): the step in flight was stopped at it"
    except KeyboardInterrupt:  # Ctrl-C: stop, and write what was found so far
        stopped = "interrupted"
    finally:
        bar.close()
    current = best["now"]
    log(f"stopped: {stopped}; {judge.cache_text()}")
    return Found(current, tuple(trail), stopped, vocab)
