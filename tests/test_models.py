import pickle

import pytest
import torch
from torch import nn

from ts_defense import Denoiser
from ts_defense.data import set12
from ts_defense.models import DnCNN, load_dncnn


@pytest.mark.parametrize(
    "name, depth, batch_norm",
    [("DnCNN-S-25.pth", 17, True), ("kair_dncnn_25.pth", 17, False), ("DnCNN-B.pth", 20, True)],
)
def test_pretrained_dncnn_denoises_set12_at_sigma_25(shared_data, name, depth, batch_norm):
    model = load_dncnn(shared_data / "weights" / name)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == batch_norm
    den = Denoiser(model, predicts="noise")
    gen = torch.Generator().manual_seed(0)
    psnrs = []
    with torch.no_grad():
        for x in set12(shared_data / "set12")[:7]:  # the 256 x 256 images
            y = x + 25 / 255 * torch.randn(x.shape, generator=gen)
            mse = (den(y).clamp(0, 1) - x).square().mean()
            psnrs.append(-10 * torch.log10(mse).item())
    mean = sum(psnrs) / len(psnrs)
    # the published Set12 mean for DnCNN at sigma 25 is about 30.4 dB; noisy input is 20.2 dB
    assert 29.9 < mean < 31.5, f"{name}: {mean:.2f} dB"


def test_refuses_pickle_payload(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("payload ran",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model.0.weight": Payload()}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load"):
        load_dncnn(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_dncnn(tmp_path / "nope.pth")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not DnCNN keys"):
        load_dncnn(tmp_path / "x.pth")


def test_denoiser_conventions():
    x = torch.rand(2, 1, 8, 8)
    sig = torch.tensor([0.1, 0.2])

    class MapModel(nn.Module):
        def forward(self, inp):
            assert inp.shape == (2, 2, 8, 8)
            return [inp[:, :1] * 0, inp[:, :1] - inp[:, 1:]]  # list: the last output counts

    out = Denoiser(MapModel(), noise_level="map")(x, sig)
    torch.testing.assert_close(out, x - sig.view(2, 1, 1, 1))

    class ArgModel(nn.Module):
        def forward(self, y, sigma):
            return y * 0 + sigma.view(-1, 1, 1, 1)

    out = Denoiser(ArgModel(), predicts="noise", noise_level="argument")(x, sig)
    torch.testing.assert_close(out, x - sig.view(2, 1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        Denoiser(nn.Conv2d(1, 2, 3, padding=1))(x)
    with pytest.raises(ValueError, match="predicts"):
        Denoiser(DnCNN(depth=3), predicts="residual")
    with pytest.raises(ValueError, match="needs the nominal sigma"):
        Denoiser(MapModel(), noise_level="map")(x)


def test_denoiser_sigma_is_normalised_like_the_sampler_sigma():
    """One sigma normaliser: numbers are checked, (B,) vectors must match the batch."""
    seen = []

    def model(noisy, sigma):
        seen.append(sigma)
        return noisy

    den = Denoiser(model, noise_level="argument")
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    den(x, 0.1)
    den(x, torch.tensor([0.1, 0.2]))
    assert seen[0].shape == (2,) and seen[0].dtype == torch.float64
    assert torch.allclose(seen[1], torch.tensor([0.1, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"sigma of shape \(3,\) must have one entry per sample"):
        den(x, torch.ones(3))
    with pytest.raises(ValueError, match="sigma must be finite and > 0"):
        den(x, -1.0)
    with pytest.raises(ValueError, match=r"a number or a \(B,\) vector here"):
        den(x, torch.ones(2, 1, 4, 4))
