"""Transfer between the two pretrained DnCNN-25s on Set12 at sigma 25 (needs ../shared/data).

To keep CI fast every Set12 image is centre-cropped to 64 x 64 (DnCNN's receptive field is
35 x 35); the measured numbers are recorded in BENCHMARKS.md.
"""

from functools import partial

import pytest
import torch

from ts_defense.attacks import DenoisingPGD
from ts_defense.data import set12
from ts_defense.evaluation.transfer import transfer_matrix
from ts_defense.models.zoo import load_model

SIGMA = 25 / 255


def crop(x, s=64):
    h, w = x.shape[-2:]
    return x[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


@pytest.fixture(scope="module")
def setup(shared_data):
    models = {n: load_model(n, shared_data) for n in ("dncnn-s-25", "kair-dncnn-25")}
    batch = torch.cat([crop(x) for x in set12(shared_data / "set12")])
    return models, batch


def run(setup, eps, steps):
    models, batch = setup
    attack = partial(DenoisingPGD, sigma=SIGMA, eps=eps / 255, steps=steps)
    return transfer_matrix(models, batch, SIGMA, attack, seed=0)


@pytest.mark.slow
def test_pgd_8_transfers_between_independent_dncnns(setup):
    r = run(setup, 8, 10)
    print("\n" + r.to_markdown())
    for t in r.targets:
        assert 28 < r.clean[t] < 31  # 64 x 64 crops: a little under the full-image 30.4 dB
    for s in r.sources:
        for t in r.targets:
            assert r.drop(s, t) > 3.0, (s, t, r.drop(s, t))  # white-box and transfer alike
    # transfer is nearly as strong as white-box: the shared blind spot
    assert r.drop("dncnn-s-25", "kair-dncnn-25") > 0.8 * r.drop("kair-dncnn-25", "kair-dncnn-25")


@pytest.mark.slow
def test_pgd_3_five_steps_is_much_weaker(setup):
    r = run(setup, 3, 5)
    print("\n" + r.to_markdown())
    for s in r.sources:
        for t in r.targets:
            assert 0.3 < r.drop(s, t) < 2.5, (s, t, r.drop(s, t))
