"""Trade-off analysis on GigaTok's published numbers (shared/reference/gigatok.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from scaling.analysis.tables import tradeoff

SIZES = [136e6, 232e6, 622e6]  # S-S, S-B, B-L
# The dilemma table read off GigaTok's figure: (rFID, AR val loss, AR-probe gFID, linear probe).
WITHOUT = [(1.58, 8.15, 9.5, 0.43), (1.22, 8.36, 9.7, 0.44), (1.13, 8.73, 11.4, 0.37)]
WITH = [(1.01, 7.86, 6.1, 0.62), (0.89, 8.11, 5.8, 0.62), (0.81, 8.05, 4.8, 0.67)]


@pytest.fixture
def gigatok() -> pd.DataFrame:
    rows = []
    for weight, values in ((0.0, WITHOUT), (0.5, WITH)):
        for n, (rfid, ar, gfid, acc) in zip(SIZES, values):
            rows.append({"params_total": n, "loss.semantic_weight": weight, "eval/rfid": rfid,
                         "probe/ar_val_loss": ar, "probe/gfid": gfid, "probe/linear_acc": acc})
    return pd.DataFrame(rows)


def per_size(df: pd.DataFrame) -> pd.DataFrame:
    metrics = ["eval/rfid", "probe/gfid", "probe/ar_val_loss", "probe/linear_acc"]
    return tradeoff.per_size(df, "params_total", metrics, tradeoff.semantic_groups(df))


def test_trend_flags_the_dilemma_only_without_semantic_regularisation(gigatok) -> None:
    trends = tradeoff.trends(per_size(gigatok), "params_total")
    flagged = {(t.group, t.gen_metric) for t in trends if t.dilemma}
    # gFID and AR loss rise steadily without it; linear probe dips only on the last step (0.44 -> 0.37).
    assert flagged == {("without", "probe/gfid"), ("without", "probe/ar_val_loss")}


def test_step_flags_name_each_worsening_step(gigatok) -> None:
    flags = tradeoff.dilemma(per_size(gigatok), "params_total")
    steps = {(f.group, f.size_from, f.gen_metric) for f in flags}
    assert ("without", 232e6, "probe/linear_acc") in steps  # 0.44 -> 0.37 while rFID 1.22 -> 1.13
    assert ("without", 136e6, "probe/linear_acc") not in steps  # 0.43 -> 0.44 improved
    assert ("with", 136e6, "probe/ar_val_loss") in steps  # 7.86 -> 8.11 even with regularisation
    assert not any(f.group == "with" and f.gen_metric == "probe/gfid" for f in flags)


def test_pareto_front_respects_metric_directions() -> None:
    df = pd.DataFrame({"eval/rfid": [1.0, 0.8, 0.9, 1.2], "probe/linear_acc": [0.7, 0.6, 0.5, 0.8]})
    front = tradeoff.pareto_front(df, ["eval/rfid", "probe/linear_acc"])
    # Row 2 is beaten by row 1 (lower rFID, higher accuracy); the rest trade one for the other.
    assert front.tolist() == [True, True, False, True]


def test_gigatok_decoder_scaling_helps_generation_more() -> None:
    """B-S 6.56, S-B 5.65, S-L 5.19, B-L 4.82 probe gFID: scale the decoder before the encoder."""
    s_enc, b_enc, s_dec, b_dec, l_dec = 52.2e6, 140.9e6, 77.0e6, 165.9e6, 456.4e6
    df = pd.DataFrame({
        "params_encoder": [b_enc, s_enc, s_enc, b_enc],
        "params_decoder": [s_dec, b_dec, l_dec, l_dec],
        "probe/gfid": [6.56, 5.65, 5.19, 4.82],
    })
    result = tradeoff.encoder_decoder(df, "probe/gfid")
    assert result is not None and result.dec < result.enc
    assert "scaling the decoder helps more" in result.verdict("gFID")


@pytest.mark.parametrize("decoder", [[2e8, 4e8, 8e8, 16e8], [2.1e8, 4e8, 8.3e8, 16e8]], ids=["exact", "nearly"])
def test_encoder_decoder_that_grew_together_are_not_separated(decoder: list[float]) -> None:
    """The tiny study's CNN widths grow both sides together, not exactly in proportion: a regression then printed
    "doubling the encoder changes rFID by +229024.5%"; now it says the data cannot tell."""
    df = pd.DataFrame({"params_encoder": [1e8, 2e8, 4e8, 8e8], "params_decoder": decoder,
                       "probe/gfid": [6.0, 5.0, 4.5, 4.0]})
    result = tradeoff.encoder_decoder(df, "probe/gfid")
    assert result is not None and not result.separable and result.corr > 0.99
    assert result.verdict("gFID").startswith("the data cannot separate encoder from decoder size")
    assert "helps more" not in result.verdict("gFID")


def test_runs_without_semantic_column_form_one_group() -> None:
    df = pd.DataFrame({"params_total": [1e8, 2e8]})
    assert set(tradeoff.semantic_groups(df)) == {tradeoff.NO_SPLIT}


def test_discrete_and_continuous_tokenizers_never_share_a_group() -> None:
    """Runs of both kinds split by kind (and semantic regularisation), so no table or law pools them; runs of one
    kind keep the plain semantic groups."""
    df = pd.DataFrame({"quantizer.kind": ["vq", "vq", "kl", "continuous", "fsq"],
                       "loss.semantic_weight": [0.0, 0.5, 0.0, 0.5, 0.0]})
    assert tradeoff.semantic_groups(df).tolist() == [
        "discrete, without", "discrete, with", "continuous, without", "continuous, with", "discrete, without"]
    assert tradeoff.semantic_groups(df.drop(columns="loss.semantic_weight")).tolist() == [
        "discrete", "discrete", "continuous", "continuous", "discrete"]
    one_kind = df[df["quantizer.kind"] != "kl"].assign(**{"quantizer.kind": "vq"})
    assert tradeoff.semantic_groups(one_kind).tolist() == ["without", "with", "with", "without"]
    table = tradeoff.per_size(df.assign(params_total=1e8, **{"flow/gfid": [5.0, 4.0, 3.0, 2.0, 1.0]}), "params_total",
                              ["flow/gfid"], tradeoff.semantic_groups(df))
    assert dict(zip(table[tradeoff.GROUP], table["flow/gfid"])) == {
        "continuous, with": 2.0, "continuous, without": 3.0, "discrete, with": 4.0, "discrete, without": 3.0}


def test_runs_of_different_token_structures_never_share_a_group() -> None:
    """The structures sweep's five runs, as MLflow logged their params: each structure its own group (two runs of
    one size are never averaged across structures); runs that all share one structure keep the plain groups."""
    df = pd.DataFrame({"quantizer.parts": ["1", "1", "2", "1", "1"],
                       "quantizer.scales": ["[]", "[1, 2, 4, 8]", "[1, 2, 4, 8]", "[]", "[]"],
                       "model.nested_dropout": ["False", "False", "False", "True", "True"],
                       "model.coarse_to_fine": ["False", "False", "False", "False", "True"],
                       "loss.semantic_weight": [0.0, 0.0, 0.5, 0.0, 0.0], "params_total": [253e3] * 5})
    assert tradeoff.semantic_groups(df).tolist() == [
        "plain, without", "multi-scale, without", "product, multi-scale, with", "nested, without",
        "coarse-to-fine, without"]
    both = df.assign(**{"quantizer.kind": ["vq", "vq", "vq", "kl", "kl"]})
    assert tradeoff.semantic_groups(both).tolist()[3:] == ["continuous, nested, without",
                                                          "continuous, coarse-to-fine, without"]
    same = df.iloc[[1, 2]].assign(**{"quantizer.parts": "2"})
    assert tradeoff.semantic_groups(same).tolist() == ["without", "with"]
    table = tradeoff.per_size(df.assign(**{"probe/gfid": [1.0, 2.0, 3.0, 4.0, 5.0]}), "params_total",
                              ["probe/gfid"], tradeoff.semantic_groups(df))
    assert len(table) == 5 and table["runs"].tolist() == [1] * 5


def test_runs_probed_by_next_scale_prediction_never_share_a_group_with_next_token_ones() -> None:
    """The structures sweep's VAR tokenizer probed twice, next token and next scale: two generators, two groups."""
    df = pd.DataFrame({"quantizer.scales": ["[]", "[1, 2, 4, 8]", "[1, 2, 4, 8]"],
                       "probe.order": ["token", "token", "scale"], "loss.semantic_weight": [0.0] * 3,
                       "params_total": [253e3] * 3, "probe/gfid": [1.0, 2.0, 3.0]})
    groups = tradeoff.semantic_groups(df)
    assert groups.tolist() == ["plain, without", "multi-scale, without", "multi-scale, next-scale AR, without"]
    table = tradeoff.per_size(df, "params_total", ["probe/gfid"], groups)
    assert table["runs"].tolist() == [1, 1, 1]
    assert tradeoff.semantic_groups(df.drop(columns="probe.order")).tolist()[1:] == ["multi-scale, without"] * 2
    assert tradeoff.semantic_groups(df.iloc[[2]]).tolist() == ["without"]  # one structure, one order
