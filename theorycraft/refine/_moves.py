"""What the search may do to a theory besides growing it: remove a component (or one of its
keys), split one into its kind's parts, rewrite a variable one change away, let one component
take over another's sites. Each returns (label, theory) pairs the judge decides on."""

from __future__ import annotations

import re

from theorycraft.inference.kinds import kind_of
from theorycraft.spec import Theory, TheoryError, parse_theory

from ._grammar import ATOMS, OPS, slug
from ._vocabulary import drop_reads, readout_name, rebuild


def removals(theory: Theory, protect: str = "") -> list[tuple[str, Theory]]:
    """Every theory one part smaller: a component gone (with what only it fed), or one item of a
    merged list (a frequency, a condition). Read-outs go with their features, not alone."""
    out = []
    for name, c in theory.components.items():
        if name == protect or name == readout_name(c.predicts or ""):
            continue
        data = theory.to_dict()
        components = dict(data["components"])
        components.pop(name)
        drop_reads(components, name)
        out.append((f"remove {name}", rebuild({**data, "components": components})))
        key = kind_of(c).merges
        if key and len(getattr(c, key)) > 1:
            for item in getattr(c, key):
                data = theory.to_dict()
                kept = [x for x in data["components"][name][key] if str(x) != str(item)]
                data["components"][name] = {**data["components"][name], key: kept}
                out.append((f"{name} -= {item}", rebuild(data)))
    return out


def splits(theory: Theory) -> list[tuple[str, Theory]]:
    """Every theory with one component re-expressed by its kind's simpler parts (a table of two
    keys as a table of each, ``Kind.parts``); a part that an existing component already is (but
    for the sites it predicts) extends that component instead."""
    out = []
    data = theory.to_dict()
    for name, c in theory.components.items():
        parts = kind_of(c).parts(data["components"][name])
        if not parts:
            continue
        components = {k: dict(v) for k, v in data["components"].items() if k != name}
        for k, part in enumerate(parts):
            sites = c.predicted()
            same = next((n for n, other in components.items() if _same_but_sites(other, part)), None)
            if same is None:
                key = part["of"][0] if isinstance(part["of"], list) else part["of"]
                label = f"{slug({v: k for k, v in ATOMS.items()}.get(key, key), key)}_code"
                components[label if label not in components else f"{name}_{k}"] = part
            else:
                had = components[same]["predicts"]
                had = had if isinstance(had, list) else [had]
                merged = list(dict.fromkeys(had + list(sites)))
                components[same] = {**components[same],
                                    "predicts": sorted(merged, key=list(theory.sites).index)}
        try:
            out.append((f"split {name} into {len(parts)} tables", rebuild({**data, "components": components})))
        except TheoryError:
            continue
    return out


def _same_but_sites(a: dict, b: dict) -> bool:
    """Two components as written are the same but for what they predict (a size one leaves to
    its default taken as the other's)."""
    def norm(d: dict, drop: tuple) -> dict:
        return {k: v if isinstance(v, list) else [v] for k, v in d.items() if k not in ("predicts",) + drop}
    drop = () if "size" in a and "size" in b else ("size",)
    return norm(a, drop) == norm(b, drop)


def rewritten(theory: Theory, name: str, new: str, expression: str) -> Theory:
    """``theory`` with variable ``name`` computing ``expression`` instead, under the name ``new``
    (its readers and its component ``NAME_code`` renamed with it)."""
    text = re.sub(rf"(?<!\w){re.escape(name)}(?=_code\b|(?!\w))", new, theory.to_yaml())
    data = parse_theory(text).to_dict()
    data["variables"] = {**data["variables"], new: expression}
    return rebuild(data)


def takeovers(theory: Theory) -> list[tuple[str, Theory]]:
    """Every theory with one component gone and another extended to the sites it predicted (a
    table of one variable taking over where a joint table was kept), read-outs left alone."""
    out = []
    data = theory.to_dict()
    for name, c in theory.components.items():
        if name == readout_name(c.predicts or "") or not c.predicted():
            continue
        for other, d in theory.components.items():
            sites = list(c.predicted())
            if other == name or other == readout_name(d.predicts or "") or not d.predicted() \
                    or set(sites) <= set(d.predicted()) or name in d.reads():
                continue
            components = {k: dict(v) for k, v in data["components"].items() if k != name}
            drop_reads(components, name)
            merged = sorted(set(d.predicted()) | set(sites), key=list(theory.sites).index)
            components[other] = {**components[other], "predicts": merged if len(merged) > 1 else merged[0]}
            try:
                taken = rebuild({**data, "components": components})
            except TheoryError:  # that component cannot predict those sites (a map onto the site it reads)
                continue
            out.append((f"replace {name} by {other} -> {', '.join(s for s in sites if s not in d.predicted())}", taken))
    return out


_CHANGEABLE = re.compile(r"==|!=|<=|>=|<|>|\b\d+\b")
_BOS_KEY = re.compile(r"\(j: j > 0 and ")


def neighbours(name: str, expression: str) -> list[tuple[str, str]]:
    """(name, expression) of every expression one change from ``expression``: a comparison turned
    into another, or an integer constant moved by one (the beginning-of-sequence guard
    ``j > 0 and`` kept); the name follows where it spells the changed part once."""
    guard = {m.start() + k for m in _BOS_KEY.finditer(expression) for k in range(len(m[0]))}
    out = []
    for m in _CHANGEABLE.finditer(expression):
        if m.start() in guard:
            continue
        text = m[0]
        options = [op for op in OPS if op != text] if text in OPS else [str(int(text) + d) for d in (-1, 1)
                                                                         if int(text) + d >= 0]
        for new in options:
            changed = expression[:m.start()] + new + expression[m.end():]
            old_word, new_word = (OPS[text][0], OPS[new][0]) if text in OPS else (text, new)
            spelt = re.findall(rf"(?<=_){old_word}(?=_|$)", name)
            renamed = (re.sub(rf"(?<=_){old_word}(?=_|$)", new_word, name) if len(spelt) == 1
                       else slug(f"{name}_{new_word}", changed))
            out.append((slug(renamed, changed), changed))
    return out
