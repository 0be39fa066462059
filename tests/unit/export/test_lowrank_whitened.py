"""Activation-aware SVD (``svd_whitened``): exact at full rank, better on the layer's outputs
than plain SVD at equal rank, refused without calibration data."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sidt_mmdet.export.lowrank import (
    CalibrationError,
    collect_input_covariances,
    factorize,
    factorize_linear,
    lowrank_model,
    output_relative_error,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')


def _inputs(n=2000, dim=24, seed=0):
    """Correlated inputs of very unequal scale per channel, as activations are."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64) @ mix
            * torch.logspace(-1, 1, dim, dtype=torch.float64))


@pytest.mark.parametrize('shape', [(37, 24), (24, 24), (16, 24)])
def test_full_rank_reproduces_the_layer(shape):
    x = _inputs(dim=shape[1])
    w = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a, b = factorize(w, min(shape), 'svd_whitened', input_cov=x.T @ x / len(x))
    torch.testing.assert_close(a @ b, w, atol=1e-9, rtol=1e-9)


def test_full_rank_linear_gives_the_same_outputs():
    lin = nn.Linear(24, 30).double()
    x = _inputs()
    new = factorize_linear(lin, 24, 'svd_whitened', allow_full_rank=True,
                           input_cov=x.T @ x / len(x))
    torch.testing.assert_close(new(x), lin(x), atol=1e-9, rtol=1e-9)


def test_singular_covariance_still_factorizes():
    # Fewer calibration samples than channels: the covariance is singular.
    x = _inputs(n=8)
    w = torch.randn(20, 24, dtype=torch.float64)
    a, b = factorize(w, 6, 'svd_whitened', input_cov=x.T @ x / len(x))
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


@pytest.mark.parametrize('rank', [2, 6, 12])
def test_beats_plain_svd_on_the_outputs(rank):
    x = _inputs()
    cov = x.T @ x / len(x)
    w = torch.randn(30, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    whitened = output_relative_error(w, *factorize(w, rank, 'svd_whitened', input_cov=cov), cov)
    plain = output_relative_error(w, *factorize(w, rank, 'svd'), cov)
    assert whitened < plain
    # The error on the outputs is measured as it is defined.
    a, b = factorize(w, rank, 'svd')
    direct = torch.linalg.norm((w - a @ b) @ x.T) / torch.linalg.norm(w @ x.T)
    assert output_relative_error(w, a, b, cov) == pytest.approx(float(direct), rel=1e-9)


def test_refused_without_calibration_data():
    w = torch.randn(8, 8)
    with pytest.raises(CalibrationError, match='svd_whitened needs calibration data'):
        factorize(w, 2, 'svd_whitened')
    with pytest.raises(CalibrationError, match=r'expected shape \(8, 8\)'):
        factorize(w, 2, 'svd_whitened', input_cov=torch.eye(4))
    model = nn.Sequential()
    model.add_module('fc1', nn.Linear(16, 16))
    with pytest.raises(CalibrationError, match=r"needs calibration data.*missing for \['fc1'\]"):
        lowrank_model(model, 'svd_whitened', ranks={'fc1': 4})


def test_lowrank_model_with_collected_covariances():
    """Every layer's covariance is that of its own inputs (the second layer's are the first
    layer's GELU outputs), and every replaced layer's out_rel_error is its error on those
    inputs. Catches covariances swapped between layers, taken of the outputs, or of one
    layer for all; an error reported for the wrong layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 32), nn.GELU(), nn.Linear(32, 24)).double()
    x = _inputs(n=512)
    names = ['0', '2']
    with torch.no_grad():
        inputs = {'0': x, '2': nn.functional.gelu(model[0](x))}
    weights = {n: model.get_submodule(n).weight.detach().clone() for n in names}
    covs = collect_input_covariances(model, names, lambda: model(x))
    assert covs['0'].shape == (24, 24) and covs['2'].shape == (32, 32)
    torch.testing.assert_close(covs['0'], x.T @ x / len(x))
    for n in names:
        torch.testing.assert_close(covs[n], inputs[n].T @ inputs[n] / len(x), rtol=1e-12,
                                   atol=1e-12)
    report = lowrank_model(model, 'svd_whitened', ranks={'0': 6, '2': 6}, input_covs=covs)
    assert all(e['replaced'] and 0 < e['out_rel_error'] < 1 for e in report.values())
    for n in names:
        new = model.get_submodule(n)
        assert new.rank == report[n]['rank'] == 6
        with torch.no_grad():
            w, xs = weights[n], inputs[n]
            direct = (torch.linalg.norm((w - new.up.weight @ new.down.weight) @ xs.T)
                      / torch.linalg.norm(w @ xs.T))
        assert report[n]['out_rel_error'] == pytest.approx(float(direct), rel=1e-9)
    assert report['0']['out_rel_error'] != pytest.approx(report['2']['out_rel_error'])
    with pytest.raises(CalibrationError, match='sent no input'):
        collect_input_covariances(model, ['0.down'], lambda: None)
