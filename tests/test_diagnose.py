"""theorycraft diagnose: a theory that leaves out a planted dependence is told where it fails."""

import json

from theorycraft.cli import main
from theorycraft.inference import FitConfig, fit
from theorycraft.refine._diagnose import diagnose

from conftest import captured, recorded_target, theory_for


def test_the_residual_points_at_what_the_theory_left_out(tmp_path):
    # z = cos(2πa/7) + 2 sin(2πb/7), tanh(x0 x1): a theory of a alone misses b
    theory = theory_for(recorded_target(tmp_path), """\
        waves: {kind: fourier, of: [a], modulus: 7, frequencies: [1]}
        read: {kind: linear, from: waves, predicts: z}
        """)
    acts = captured(tmp_path, theory)
    report = diagnose(fit(theory, acts, FitConfig(progress=False)), acts, top=2, worst=3)["z"]
    assert 0.5 < report["residual_share_of_variance"] < 1.0
    first = report["directions"][0]
    assert first["variance_share"] > 0.5
    assert first["correlated"][0]["name"] == "b" and abs(first["correlated"][0]["correlation"]) > 0.6
    assert abs(first["direction"][0]) > 0.9  # the missing sine lives in z's first column
    errors = [w["squared_error"] for w in report["worst"]]
    assert errors == sorted(errors, reverse=True) and len(report["worst"]) == 3


def test_the_residual_points_at_the_vocabulary_candidate_it_lacks(tmp_path):
    from theorycraft.refine._vocabulary import parse_vocabulary

    theory = theory_for(recorded_target(tmp_path), """\
        waves: {kind: fourier, of: [a], modulus: 7, frequencies: [1]}
        read: {kind: linear, from: waves, predicts: z}
        """)
    vocab = parse_vocabulary("components:\n  waves_b: {kind: fourier, of: [b], modulus: 7, frequencies: {each: 1..3},"
                             " predicts: z}\n", "v.yaml", theory)
    acts = captured(tmp_path, theory)
    report = diagnose(fit(theory, acts, FitConfig(progress=False)), acts, top=1, vocabulary=vocab)["z"]
    best = report["directions"][0]["correlated"]
    # the missing 2 sin(2πb/7) is column 1 (sin) of the frequency-1 candidate: closer than b itself
    assert best[0]["name"] == "candidate waves_b += 1[1]" and abs(best[0]["correlation"]) > 0.9


def test_diagnose_command_writes_its_report(tmp_path, capsys, at_root):
    out = tmp_path / "run"
    assert main(["infer", "examples/modadd_fourier.yaml", "--n", "3000", "--out", str(out),
                 "--cache", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(out), "--top", "2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("site mlp: residual = ") and "direction 2:" in printed
    report = json.loads((out / "diagnosis.json").read_text())
    assert len(report["mlp"]["directions"]) == 2 and len(report["mlp"]["worst"]) == 5

