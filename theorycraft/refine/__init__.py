"""Refinement, a stage of its own above the engine and the scorer: search vocabularies, cheap
estimates of what a candidate buys, greedy search by held-out MDL, its trail and scaling curve,
and diagnosis of where a fitted theory fails."""

from ._diagnose import diagnose, render
from ._scaling import ScalingCurve, fit_scaling
from ._judge import Assessment, Judge, Totals
from ._search import Found, Step, explained_sites, search
from ._trail import SearchResult, given_of, plot_trail, write_search
from ._vocabulary import Vocabulary, default_vocabulary, load_vocabulary, parse_vocabulary

__all__ = ["Assessment", "Found", "Judge", "Step", "Totals", "ScalingCurve", "SearchResult", "Vocabulary", "default_vocabulary", "diagnose",
           "explained_sites", "fit_scaling", "given_of", "load_vocabulary", "parse_vocabulary", "plot_trail", "render", "search",
           "write_search"]
