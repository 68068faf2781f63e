"""The report's convergence tables: each count of training codes shown, and a number still moving marked."""

from pyro_vae.report.convergence import convergence_blocks
from pyro_vae.report.document import Table, render_markdown


def _result(variant, seed, values):
    return {"variant": variant, "seed": seed, "evaluation": {"convergence": values}}


def test_every_count_is_a_column_and_a_moving_number_is_marked():
    results = [_result("AE", s, {"hole_mass_fitted": {"2000": 0.13 + s / 100, "10000": 0.196, "60000": 0.198}})
               for s in (0, 1)]
    results += [_result("VAE", s, {"hole_mass_fitted": {"2000": 0.30, "10000": 0.24, "60000": 0.12},
                                   "aggregate_kl": {"2000": 0.4, "10000": 0.1, "60000": 0.05}}) for s in (0, 1)]
    blocks = convergence_blocks(results, ["AE", "VAE"])
    tables = [b for b in blocks if isinstance(b, Table)]
    assert [t.header for t in tables][0] == ["variant", "N = 2,000", "N = 10,000", "N = 60,000", "moved"]
    hole, kl = tables
    assert [row[0] for row in hole.rows] == ["AE", "VAE"] and [row[0] for row in kl.rows] == ["VAE"]
    assert hole.rows[0][-1] == "1.0%" and hole.rows[1][-1] == "100.0%"  # 0.198 vs 0.196; 0.12 vs 0.24
    assert "not converged: VAE" in hole.caption and "not converged: VAE" in kl.caption
    text = render_markdown(blocks)
    assert "Convergence in the number of training codes" in text and "| AE | 0.1350 ± 0.0071 | 0.1960 | 0.1980 | 1.0% |" in text


def test_no_convergence_data_no_section():
    assert convergence_blocks([_result("AE", 0, {})], ["AE"]) == []
