"""Counterfactual fidelity: the theory, run free under each standard intervention, against the
intervened network (in the axioms' ``Lab``), on held-out examples."""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from theorycraft.errors import FitError
from theorycraft.inference.engine import site_rows
from theorycraft.spec import Place, Site

from ._axioms import Lab
from ._card import CounterfactualScore
from ._fidelity import r2
from ._splice import kl_rows

def standard_interventions(sites: Mapping[str, Site], shapes: Mapping[str, tuple]) -> list[tuple[str, Site, tuple]]:
    """The interventions every theory of a target is judged under, over the target's sites (the
    reference theory's: every baseline faces the same ones): resample each site (from another
    held-out example), and interchange its last position with another example's (sites over
    positions; of a pattern, the last query's row). (label, site, index) each."""
    out = []
    for name, site in sites.items():
        out.append((f"resample {name}", site, ()))
        if len(shapes[name]) >= 2:
            out.append((f"interchange {name}[last]", site, (-1,) if len(shapes[name]) == 2 else (None, -1)))
    return out


def counterfactual_fidelity(lab: Lab, sites: Optional[Mapping[str, Site]] = None) -> CounterfactualScore:
    """How well the theory, run free under each standard intervention (over ``sites``, default
    its own covered ones), predicts the intervened network: R² pooled over the interventions and
    the covered sites each one moves (not the site intervened on: that is fidelity on other
    examples), SST around the train mean as everywhere; and, for a target with logits, the mean
    KL from the intervened network's output to the output with the theory's prediction spliced in
    at its last site. A site the theory does not model carries no change on in it; an
    intervention the theory cannot express is skipped (and listed)."""
    fitted, theory = lab.fitted, lab.theory
    plan = fitted.plan
    sites = dict(sites) if sites is not None else {s: theory.sites[s] for s in theory.covered}
    hooks = [theory.sites[s].hook for s in theory.covered]
    clean_sites = lab.theory_sites(lab.inputs)
    shapes = {n: _shape(lab, site) for n, site in sites.items()}
    last = theory.sites[theory.site_order()[0][-1]]
    sse = sst = 0.0
    kls, names, skipped = [], [], []
    logits = lab.target.task.output == "logits"
    for name, intervened, index in standard_interventions(sites, shapes):
        moved = [s for s in theory.covered if (theory.sites[s].hook, theory.sites[s].position)
                 != (intervened.hook, intervened.position)]
        if not moved and not logits:
            continue  # nothing of this theory downstream to score, and no output to compare
        lab.reseed(name)
        place = Place(str(intervened.hook), _hook_index(intervened, index))
        try:
            outcome = lab.apply("resample", place, name, clean_sites=clean_sites)
        except FitError:
            skipped.append(name)
            continue
        recorded, output = lab.record(outcome.inputs, hooks, outcome.replace)
        names.append(name)
        for s in moved:
            site = theory.sites[s]
            after, before = site_rows(plan, s, lab.at(recorded, site)), site_rows(plan, s, clean_sites[s])
            spread = float(((after - fitted.means[s]) ** 2).sum())
            if float(((after - before) ** 2).sum()) <= 1e-9 * max(spread, 1e-30):
                continue  # not downstream of the intervention: nothing counterfactual to predict
            sse += float(((site_rows(plan, s, outcome.theory[s]) - after) ** 2).sum())
            sst += spread
        if logits:
            rows, _ = lab.target.task.read(output, outcome.inputs)
            spliced, _ = lab.target.task.read(lab.record(outcome.inputs, [], lab.spliced(outcome, last))[1],
                                              outcome.inputs)
            kls.append(float(kl_rows(rows, spliced).mean()))
    return CounterfactualScore(round(r2(sse, sst), 6) if sst > 0 else None,
                               round(float(np.mean(kls)), 6) if kls else None, tuple(names), len(lab.inputs),
                               tuple(skipped))


def _hook_index(site: Site, index: tuple) -> tuple:
    """An index into a site's per-example values as an index into its hook's (positions first)."""
    if site.position is None:
        return index
    if isinstance(site.position, int):
        return (site.position, *index)
    return (site.position[index[0]], *index[1:]) if index else (site.position,)


def _shape(lab: Lab, site: Site) -> tuple:
    values = lab.record(lab.inputs[:2], [site.hook])[0][site.hook]
    return site.kept_shape(values.shape[1:])
