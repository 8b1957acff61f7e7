"""The search vocabulary: candidate components written in the theory language.

A vocabulary file names variables and *templates*: components of the language whose fields may
hold ``{each: [...]}`` (or ``{each: "1..56"}``), one candidate per item (the product of items
where several fields vary). Every template says which site it ``predicts``; a template of fixed
features (a kind with ``fixed``: fourier, rule, product) is read out into that site by the
site's linear read-out.

    vocabulary: modadd
    variables: {a: token[0], b: token[1]}
    components:
      waves: {kind: fourier, of: [a, b], modulus: 113, frequencies: {each: 1..56}, predicts: mlp}
      pairs: {kind: product, of: waves, predicts: mlp}

How a candidate joins a theory (``Candidate.apply``) is its kind's: candidates of a kind with
``merges`` (fourier, rule) *merge* into its component (one more frequency, one more condition);
others (product, lookup, linear, mlp, dictionary) add a component; where a template's items are
unnamed choices (``rank: {each: [8, 32]}``) a new choice replaces the earlier one, where they are
named (``of: {each: {tok: token[i], prev: token[i - 1]}}``) they coexist. A candidate of a kind
with ``takes_head`` (attention) takes over its head.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from theorycraft.inference.kinds import kind_of
from theorycraft.spec import (Diagnostic, ExprError, Name, SourceMap, Theory, TheoryError, declare_inputs, describe,
                              did_you_mean, dump as dump_yaml, load_yaml, parse_expr, parse_theory, read_limited,
                              validate_component)
from theorycraft.spec import VOCABULARY_KEYS, Grammar, each_items


@dataclass(frozen=True)
class Template:
    name: str
    raw: dict  # as written, with {each: ...} fields
    choices: dict[str, list]  # field -> the items it ranges over
    labels: dict[str, list[str]]  # field -> a name for each item (mapping keys, or the values)
    named: bool = False  # items were given names (a mapping): a candidate is named by its items

    @property
    def kind(self) -> str:
        return self.raw["kind"]

    @property
    def site(self) -> str:
        return self.raw["predicts"]

    def items(self):
        """(component data, label) for every combination of the varying fields."""
        fields = list(self.choices)
        for combo in itertools.product(*(range(len(self.choices[f])) for f in fields)):
            data = dict(self.raw)
            for f, k in zip(fields, combo):
                data[f] = self.choices[f][k]
            yield data, "_".join(self.labels[f][k] for f, k in zip(fields, combo))


@dataclass(frozen=True)
class Vocabulary:
    name: str
    variables: dict[str, str]
    templates: dict[str, Template]
    text: str = field(default="", compare=False)
    grammar: Grammar | None = None  # RASP's primitives over the theory's variables (``_propose``)

    @property
    def sites(self) -> list[str]:
        grown = list(self.grammar.sites + self.grammar.patterns) if self.grammar else []
        return list(dict.fromkeys([t.site for t in self.templates.values()] + grown))

    def beside(self, start: Theory) -> "Vocabulary":
        """The start theory's variables beside this vocabulary's own: a template may read either, and
        a searched theory drops the variables none of its components read."""
        declared = {k: str(v) for k, v in (start.to_dict().get("variables") or {}).items()}
        return replace(self, variables={**declared, **self.variables})


# --- reading ---------------------------------------------------------------------------------------

def parse_vocabulary(text: str, path: str = "<vocabulary>", theory: Theory | None = None, *,
                     trust_code: bool = False) -> Vocabulary:
    """Parse and check a vocabulary; with ``theory`` (the start of a search) also check that each
    template joins it as a valid theory. Raises TheoryError with every problem at file:line:col.
    ``trust_code``: templates of ``kind: module:attr`` may import their modules."""
    data, source, problems = load_yaml(text, path)
    problems = list(problems)
    if not problems and not isinstance(data, dict):
        problems.append(source.diagnostic((), f"expected a vocabulary (a mapping with 'components:'), "
                                              f"found {describe(data)}"))
    if problems:
        raise TheoryError(problems)
    for key in data:
        if key not in VOCABULARY_KEYS:
            problems.append(source.diagnostic((key,), f"unknown key '{key}' in a vocabulary"
                                                      f"{did_you_mean(key, VOCABULARY_KEYS)}; expected one of: "
                                                      f"{', '.join(VOCABULARY_KEYS)}", key=True))
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        problems.append(source.diagnostic(("variables",), f"expected a mapping of names to expressions, "
                                                         f"found {describe(variables)}"))
        variables = {}
    for name, expr in variables.items():
        try:
            parse_expr(expr)
        except ExprError as exc:
            problems.append(source.diagnostic(("variables", name), exc.message, offset=exc.offset))
    grammar = _grammar(data.get("grammar"), source, problems)
    templates = {}
    components = data.get("components")
    if (not isinstance(components, dict) or not components) and (data.get("grammar") is None or components is not None):
        problems.append(source.diagnostic(("components",), f"expected 'components:' holding at least one "
                                                          f"template (or a 'grammar:'), found {describe(components)}"))
    if not isinstance(components, dict):
        components = {}
    for name, raw in components.items():
        template = _template(name, raw, source, problems, trust_code)
        if template is not None:
            templates[name] = template
    if problems:
        raise TheoryError(problems)
    vocab = Vocabulary(str(data.get("vocabulary", path)), {k: str(v) for k, v in variables.items()}, templates, text,
                       grammar)
    if theory is not None:
        check_against(vocab, theory, source)
    return vocab


def _grammar(raw: Any, source: SourceMap, problems: list) -> Grammar | None:
    """The ``grammar:`` section, or None; its first problem reported at its place."""
    if raw is None:
        return None
    keys = list(Grammar.model_fields)
    if not isinstance(raw, dict):
        problems.append(source.diagnostic(("grammar",), f"expected 'grammar:' to be a mapping (of {', '.join(keys)}), "
                                                        f"found {describe(raw)}"))
        return None
    try:
        return Grammar.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0])
        if error["type"] == "extra_forbidden":
            problems.append(source.diagnostic(("grammar", key), f"unknown key '{key}' in 'grammar:'"
                                                                f"{did_you_mean(key, keys)}; expected one of: "
                                                                f"{', '.join(keys)}", key=True))
        else:
            problems.append(source.diagnostic(("grammar",) + tuple(error["loc"]), f"grammar '{key}': "
                                              f"{error['msg'][0].lower() + error['msg'][1:]}, found {describe(error['input'])}"))
        return None


def _valid_component(raw: Any, source: SourceMap, path: tuple, problems: list, trust_code: bool) -> bool:
    value, found = validate_component(raw, source, path, trust_code=trust_code)
    problems += found[:1]  # the first problem only: the other candidates repeat it
    return value is not None


def spec_of(data: dict):
    """A component's plain data (already valid) as its kind's frozen spec."""
    return kind_of(data["kind"]).schema.model_validate(data)


def _template(name: str, raw: Any, source: SourceMap, problems: list, trust_code: bool = False) -> Template | None:
    path = ("components", name)
    if not _valid_name(name):
        problems.append(source.diagnostic(path, f"expected a name of letters, digits and '_' that starts with a "
                                                f"letter, found {describe(name)}", key=True))
        return None
    if not isinstance(raw, dict) or "kind" not in raw:
        problems.append(source.diagnostic(path, f"expected a component template (a mapping with a 'kind'), "
                                                f"found {describe(raw)}"))
        return None
    if "predicts" not in raw:
        problems.append(source.diagnostic(path, "missing required key 'predicts' in a template: the site its "
                                                "candidates explain"))
        return None
    choices, labels, named = {}, {}, False
    for key, value in raw.items():
        try:
            each = each_items(value)
        except ValueError as exc:
            problems.append(source.diagnostic(path + (key, "each"), str(exc)))
            return None
        if each is not None:
            choices[key], labels[key] = each
            named |= isinstance(value["each"], dict)
    template = Template(name, dict(raw), choices, labels, named)
    first = len(problems)
    for data, _ in template.items():  # every candidate must be a valid component of the language
        if not _valid_component(data, source, path, problems, trust_code):
            break
    return template if len(problems) == first else None


def _valid_name(name: Any) -> bool:
    try:
        TypeAdapter(Name).validate_python(name)
        return True
    except ValidationError:
        return False


def check_against(vocab: Vocabulary, theory: Theory, source: SourceMap | None = None) -> None:
    """Every template predicts a site of the theory, and its first candidate joins it validly."""
    problems: list[Diagnostic] = []

    def error(path, message):
        problems.append(source.diagnostic(path, message) if source else Diagnostic(vocab.name, 1, 1, "error", message))

    for field_name in ("sites", "patterns"):
        for k, site in enumerate(getattr(vocab.grammar, field_name, ())):
            if site not in theory.sites:
                error(("grammar", field_name, k), f"expected a site of the start theory ({', '.join(theory.sites)}), "
                      f"found {describe(site)}{did_you_mean(site, list(theory.sites))}")
    for name, t in vocab.templates.items():
        if t.site not in theory.sites:
            error(("components", name, "predicts"), f"expected a site of the start theory "
                  f"({', '.join(theory.sites)}), found {describe(t.site)}{did_you_mean(t.site, list(theory.sites))}")
            continue
        for candidate in candidates(vocab, theory, templates=[name], state={}):
            try:
                candidate.apply(theory)
            except TheoryError as exc:
                error(("components", name), f"this template does not join the start theory: "
                      f"{exc.diagnostics[0].message}")
            break
    if problems:
        raise TheoryError(problems)


def load_vocabulary(path: str, theory: Theory | None = None, *, trust_code: bool = False) -> Vocabulary:
    try:
        text = read_limited(path)  # a regular file of at most MAX_FILE_BYTES, like a theory
    except ValueError as exc:
        raise TheoryError([Diagnostic(path, 1, 1, "error", f"the vocabulary: {exc}")]) from None
    return parse_vocabulary(text, path, theory, trust_code=trust_code)


# --- candidates ----------------------------------------------------------------------------------

def readout_name(site: str) -> str:
    return f"{site}_readout"


@dataclass(frozen=True)
class Candidate:
    """One edit of a theory: add (or merge, or swap in) one component."""

    template: str
    kind: str
    site: str
    name: str  # the component it adds or extends
    data: dict  # the component as it will be written (merged where it merges)
    item: dict  # the candidate alone (for a merge: the template with just this item)
    variables: dict[str, str]
    replaces: tuple[str, ...] = ()
    label: str = ""
    extends: str = ""  # the site an existing component is extended to (``data`` predicts it too)

    @property
    def description(self) -> str:
        if self.extends:
            return f"{self.name} -> {self.extends}"
        if kind_of(self.kind).merges:
            return f"{self.name} += {self.label}"
        # a variable the candidate brings in is shown as what it computes
        computes = f" of {self.label} = {self.variables[self.label]}" if self.label in self.variables else ""
        return f"{self.name} ({self.kind}{computes}{', replaces ' + ', '.join(self.replaces) if self.replaces else ''})"

    def apply(self, theory: Theory) -> Theory:
        data = theory.to_dict()
        components = {k: v for k, v in data.get("components", {}).items() if k not in self.replaces}
        for old in self.replaces:
            drop_reads(components, old)
        components[self.name] = self.data
        if kind_of(self.kind).fixed:  # fixed features: read out by the site's linear map
            readout = components.get(readout_name(self.site)) or {"kind": "linear", "from": [], "predicts": self.site}
            reads = list(readout["from"])
            if self.name not in reads:
                reads.append(self.name)
            components.pop(readout_name(self.site), None)
            components[readout_name(self.site)] = {**readout, "from": reads}  # last: it reads the others
        data["components"] = components
        data["variables"] = {**self.variables, **data.get("variables", {})}
        return rebuild(data)


def drop_reads(components: dict, name: str) -> None:
    for other in list(components.values()):
        for key in ("from", "of"):
            if isinstance(other.get(key), list) and name in other[key]:
                other[key] = [r for r in other[key] if r != name]


def rebuild(data: dict) -> Theory:
    """A theory from plain data, with unused variables and empty read-outs dropped."""
    components = {k: dict(v) for k, v in data.get("components", {}).items()}
    while True:  # a component left reading nothing goes (a read-out after its last feature)
        empty = [k for k, v in components.items() if _reads_nothing(v)]
        if not empty:
            break
        for k in empty:
            components.pop(k)
            drop_reads(components, k)
    data = {**data, "components": components}
    used = _used_variables(data)
    data["variables"] = {k: v for k, v in data.get("variables", {}).items() if k in used}
    if not data["variables"]:
        data.pop("variables")
    if not components:
        data.pop("components")
    data.pop("inputs", None)  # declared anew: a candidate may predict a site that was an input
    return parse_theory(dump_yaml(declare_inputs(data), sort_keys=False, width=100), path="<search>")


def _reads_nothing(component: dict) -> bool:
    key = kind_of(component["kind"]).reads_field
    return key is not None and isinstance(component.get(key), list) and not component[key]


def _used_variables(data: dict) -> set[str]:
    text = " ".join(str(v) for c in data.get("components", {}).values() for k, v in c.items()
                    if k in ("of", "when", "rule", "from"))
    names = set(re.findall(r"[A-Za-z_]\w*", text))
    variables = data.get("variables", {})
    for _ in range(len(variables)):  # variables may be defined through each other
        names |= {n for k in list(names) if k in variables for n in re.findall(r"[A-Za-z_]\w*", str(variables[k]))}
    return names


def candidates(vocab: Vocabulary, theory: Theory, *, templates=None, state: dict[str, str]) -> list[Candidate]:
    """Every edit the vocabulary offers the theory now. ``state`` maps component names the search
    added to their templates (so a new choice of a template replaces the old)."""
    out = []
    components = theory.components
    written = theory.to_dict().get("components", {})
    for name in templates or vocab.templates:
        t = vocab.templates[name]
        kind = kind_of(t.kind)
        if kind.fixed and kind.reads_field and not all(r in components for r in as_list(t.raw[kind.reads_field])):
            continue  # products of features not chosen yet
        for data, label in t.items():
            data = {k: v for k, v in data.items() if not (kind.fixed and k == "predicts")}
            if not _grown(data, vocab.variables, theory.variables):
                continue
            if kind.merges:
                key = kind.merges
                items = as_list(data[key])
                current = components.get(name)
                have = list(written[name][key]) if current is not None and kind_of(current) is kind else []
                if all(str(i) in map(str, have) for i in items):
                    continue
                merged = {**data, key: have + [i for i in items if str(i) not in map(str, have)]}
                out.append(Candidate(name, t.kind, t.site, name, merged, data, vocab.variables, label=label))
                continue
            cname = label if t.named else f"{name}_{label}" if t.choices else name
            if kind.takes_head:
                head = data.get("head") or 0
                taken = tuple(n for n, c in components.items() if kind_of(c).takes_head
                              and c.predicts == data["predicts"] and (c.head or 0) == head)
                cname = f"{t.site}_{cname}" if sum(kind_of(x.kind).takes_head for x in vocab.templates.values()) > 1 else cname
                if any(_same(components[n], data) for n in taken):
                    continue
                out.append(Candidate(name, t.kind, t.site, cname, data, data, vocab.variables, taken, label))
                continue
            same = [n for n in components if _same(components[n], data)]
            if same:  # found already: offered at this site as its extension, never derived anew
                out += _extension(t, theory, same[0], written[same[0]], vocab.variables)
                continue
            # a template's unnamed choices (a rank, a width) are alternatives; its named items coexist
            replaces = () if t.named else tuple(n for n, tmpl in state.items() if tmpl == name and n in components)
            out.append(Candidate(name, t.kind, t.site, cname, data, data, vocab.variables, replaces, label))
    return out


def _grown(data: dict, variables: dict[str, str], held) -> bool:
    """Whether the vocabulary variables the candidate reads are built only on what the theory
    holds: a variable defined through a computed one (an aggregate selecting by a count) is offered
    once a candidate has brought that one in, as RASP programs compose."""
    reads = set(re.findall(r"[A-Za-z_]\w*", " ".join(str(data.get(k, "")) for k in ("of", "from", "when", "rule"))))
    for v in reads & set(variables):
        for w in set(re.findall(r"[A-Za-z_]\w*", variables[v])) & set(variables) - {v}:
            if w not in held and parse_expr(variables[w]).reductions:
                return False
    return True


def _extension(t: Template, theory: Theory, name: str, written: dict, variables: dict) -> list[Candidate]:
    """Component ``name`` predicting ``t``'s site too (``predicts: [a, b]``: one instance, and
    read-out, per site), unless it does already."""
    predicted = list(theory.components[name].predicted())
    if not predicted or t.site in predicted:  # (fixed features predict nothing: their read-out does)
        return []
    order = list(theory.sites)
    sites = sorted(predicted + [t.site], key=order.index)
    return [Candidate(t.name, t.kind, t.site, name, {**written, "predicts": sites},
                      {**written, "predicts": t.site}, variables, label=f"{name}@{t.site}", extends=t.site)]


def _same(component, data: dict) -> bool:
    """The same component, whatever shorthand the template wrote it in."""
    return _dump(component) == _dump(spec_of(data))


def _dump(component) -> dict:
    return {k: v for k, v in component.model_dump(mode="json", by_alias=True, exclude_defaults=True).items()
            if k not in ("doc", "predicts")}


def as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --- defaults --------------------------------------------------------------------------------------

MECHANISM_RANKS = (8, 32, 64, 128)


def _numeric_modulus(values: np.ndarray) -> int | None:
    """A token position that takes every value 0..m-1 (m ≥ 5) holds numbers mod m, as far as a
    default vocabulary can tell."""
    distinct = np.unique(values)
    m = len(distinct)
    return m if m >= 5 and distinct[0] == 0 and distinct[-1] == m - 1 else None


def _token_templates(site: str, tokens: np.ndarray, variables: dict) -> dict[str, dict]:
    """Templates for a site with one row per example, over the token positions that vary."""
    varying = [p for p in range(tokens.shape[1]) if len(np.unique(tokens[:, p])) > 1]
    letters = {p: "abcdefgh"[n] if n < 8 else f"t{p}" for n, p in enumerate(varying)}
    variables.update({letters[p]: f"token[{p}]" for p in varying})
    out = {}
    numeric = {p: _numeric_modulus(tokens[:, p]) for p in varying}
    moduli = {m for m in numeric.values() if m}
    if len(moduli) == 1:
        m = next(iter(moduli))
        out[f"{site}_waves"] = {"kind": "fourier", "of": [letters[p] for p in varying if numeric[p] == m],
                                "modulus": m, "frequencies": {"each": f"1..{m // 2}"}, "predicts": site}
        out[f"{site}_pairs"] = {"kind": "product", "of": f"{site}_waves", "predicts": site}
    pairs = list(itertools.combinations(letters.values(), 2))
    rules = [f"{x} == {y}" for x, y in pairs] + [f"{x} < {y}" for x, y in pairs]
    rules += [f"{letters[p]} < {int(np.median(tokens[:, p]))}" for p in varying]  # comparisons with a constant
    out[f"{site}_rules"] = {"kind": "rule", "when": {"each": rules}, "predicts": site}
    out[f"{site}_tables"] = {"kind": "lookup", "of": {"each": {f"{site}_{v}": v for v in letters.values()}},
                             "predicts": site}
    return out


def default_vocabulary(theory: Theory, shapes: dict[str, tuple], inputs: np.ndarray | None) -> str:
    """A vocabulary for a bare target, as YAML text: per site, by what its shape and inputs allow.
    Token sites at one position: lookups of each varying token, Fourier features of numeric
    tokens at every frequency and their products, equality and comparison rules. Token sites over
    positions, every one of them: the grammar of RASP's primitives over the theory's variables
    (``grammar: sites``, proposed step by step by ``_propose``). Pattern sites: the grammar's
    selects as attention rules, proposed for each head by its recorded pattern (``grammar:
    patterns``). Vector sites: linear maps (full and low rank) from each site
    before them."""
    variables: dict[str, str] = {}
    components: dict[str, dict] = {}
    token_inputs = inputs is not None and np.issubdtype(np.asarray(inputs).dtype, np.integer)
    names = list(theory.sites)
    grown: list[str] = []
    patterns: list[str] = []
    for k, (site, spec) in enumerate(theory.sites.items()):
        shape = shapes[site]
        upstream = [u for u in names[:k] if len(shapes[u]) == len(shape) and len(shape) in (1, 2)]
        if len(shape) == 3:  # [head, query, key]: each head's pattern proposes the grammar's selects
            patterns.append(site)
            continue
        if token_inputs and len(shape) == 2:  # one row per position: what the input computes, at every site
            grown.append(site)
        elif token_inputs and len(shape) == 1:  # one row per example (a position kept, or a vector)
            components.update(_token_templates(site, np.asarray(inputs), variables))
        width = shape[-1] if shape else 1
        for u in upstream:  # mechanisms: maps from the sites before this one, low rank or full (null)
            ranks = [r for r in MECHANISM_RANKS if r < min(width, shapes[u][-1]) // 2]
            components[f"{u}_to_{site}"] = {"kind": "linear", "from": u, "predicts": site,
                                            **({"rank": {"each": ranks + [None]}} if ranks else {})}
            if not ranks:
                components[f"{u}_to_{site}_relu"] = {"kind": "linear", "from": u, "activation": "relu",
                                                     "predicts": site}
    doc = {"vocabulary": f"default for {theory.target}",
           "description": "generated by theorycraft search from the start theory's sites and inputs"}
    if variables:
        doc["variables"] = variables
    if grown or patterns:
        doc["grammar"] = {**({"sites": grown} if grown else {}), **({"patterns": patterns} if patterns else {})}
    if components:
        doc["components"] = components
    return dump_yaml(doc, sort_keys=False, width=110, default_flow_style=None)
