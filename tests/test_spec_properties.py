"""Property-based: whatever the file holds, validation answers with diagnostics, never a traceback."""

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import EXAMPLES
from theorycraft.spec import check_theory

SOURCES = [p.read_text() for p in EXAMPLES]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clean(text: str) -> None:
    theory, diagnostics = check_theory("fuzz.yaml", text=text)
    for d in diagnostics:
        assert d.path == "fuzz.yaml" and d.line >= 1 and d.col >= 1
        assert d.severity in ("error", "warning") and d.message
    assert (theory is None) == any(d.severity == "error" for d in diagnostics)


@SETTINGS
@given(st.text(max_size=200))
def test_random_text(text):
    assert_clean(text)


@SETTINGS
@given(st.sampled_from(SOURCES), st.data())
def test_mutated_examples(source, data):
    chars = list(source)
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(chars)))
        op = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        char = data.draw(st.sampled_from(list(":{}[],-'\"#&*!|> \n\tabz019_.")))
        if op == "delete" and at < len(chars):
            del chars[at]
        elif op == "insert":
            chars.insert(at, char)
        elif at < len(chars):
            chars[at] = char
    assert_clean("".join(chars))


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["linear", "fourier", "token[0]", "a + b", "mlp"]))
KEYS = st.one_of(st.sampled_from(["theory", "target", "sites", "variables", "components", "kind", "of",
                                  "from", "predicts", "include", "width", "frequencies", "modulus", "rule"]),
                 st.text(max_size=8))
DATA = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(KEYS, inner, max_size=5)), max_leaves=20)


@SETTINGS
@given(DATA)
def test_random_structures(data):
    assert_clean(yaml.safe_dump(data))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["w", "n", "x"]), st.dictionaries(KEYS, DATA, max_size=4), max_size=3))
def test_random_components_in_a_valid_frame(components):
    frame = {"theory": "t", "target": "builtin:x", "sites": {"s": "a.b"}, "variables": {"a": "token[0]"},
             "components": components}
    assert_clean(yaml.safe_dump(frame))
