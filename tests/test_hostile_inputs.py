"""Hostile inputs found from outside (issue 16.5): each gives a one-line ValueError/TypeError
naming the parameter, or the right result — never an overflow, a raw torch error, a silent
NaN/Inf or a result that drops data."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ts_defense import Denoiser, PatchSampler, TSConfig, TSSampler
from ts_defense.evaluation.detect import TypicalityDetector
from ts_defense.models import DnCNN, ProxGradUnfolded

HUGE = 10**400  # a 400-digit int: math.isfinite(HUGE) raises OverflowError


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and len(text) < 300, text
    return text


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"families": {"local": {"window": HUGE}}}, "window"),
        ({"families": {"local": {"window": 10**9}}}, "window"),  # window**2 tiles per image
        ({"families": {"structured": {"corr_scale": HUGE}}}, "corr_scale"),
        ({"sigma": HUGE}, "sigma"),
        ({"sigma": (1e-50, 1e-49)}, "sigma"),  # rounds to 0 in float32
        ({"sigma": 1e-45}, "sigma"),
        ({"families": {"radial": {"band": (0.1, 1e37), "sides": "above"}}}, r"band\[1\]"),
        ({"families": {"radial": {"band": (0.1, HUGE), "sides": "above"}}}, "band"),
        ({"families": {"radial": 1e39}}, "families"),
        ({"families": {"radial": 3e38, "local": 3e38}}, "families"),  # the sum overflows
        ({"families": {"radial": HUGE}}, "families"),
        ({"data_range": 1e308}, "data_range"),
        ({"clip": (-1e39, 1e39)}, "clip"),
    ],
)
def test_options_beyond_float32_are_refused_by_name(options, name):
    with pytest.raises(ValueError, match=name) as err:
        TSConfig(**options)
    one_line(err)


def test_draw_sigma_override_is_bounded():
    x = torch.rand(2, 1, 8, 8)
    sampler = TSSampler(seed=0)
    for sigma in (1e308, 1e-50, 2.0, torch.tensor(1e38), torch.tensor([0.1, 1e30])):
        with pytest.raises(ValueError, match="sigma") as err:
            sampler.draw(x, sigma=sigma)
        one_line(err)
    assert bool(torch.isfinite(sampler.draw(x, sigma=1.0).noisy).all())  # data_range itself


def test_sampler_refuses_a_positional_non_config():
    with pytest.raises(TypeError, match="config must be a TSConfig, got float"):
        TSSampler(0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DnCNN(depth=2**63),
        lambda: DnCNN(depth=2**40),
        lambda: DnCNN(features=10**6),
        lambda: DnCNN(depth=HUGE),
        lambda: ProxGradUnfolded(steps=2**63),
        lambda: ProxGradUnfolded(steps=2**40),
        lambda: ProxGradUnfolded(steps=3, depth=2**40),
    ],
)
def test_absurd_network_sizes_are_refused_before_allocating(make):
    with pytest.raises(ValueError, match="steps|depth|features") as err:
        make()
    one_line(err)


def test_denoiser_misuse_is_a_clear_error():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="model output"):
        Denoiser(lambda y: ())(x)
    with pytest.raises(TypeError, match="noise_level='argument'.*Conv2d takes no sigma"):
        Denoiser(nn.Conv2d(1, 1, 3, padding=1), noise_level="argument")
    with pytest.raises(TypeError, match="noise_level='argument'"):
        Denoiser(lambda y: y, noise_level="argument")
    out = Denoiser(lambda y, sigma=None: y, noise_level="argument")(x, 0.1)  # still works
    assert torch.equal(out, x)


def test_detector_refuses_a_nan_centre():
    den = Denoiser(nn.Identity())
    for bad in (math.nan, math.inf, HUGE):
        with pytest.raises(ValueError, match="centre"):
            TypicalityDetector(den, 0.1, centre=bad, threshold=0.1)


def test_patch_sampler_keeps_every_image_of_a_batch_in_a_list():
    gen = torch.Generator().manual_seed(0)
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 16, 16).contiguous()
    sampler = PatchSampler([images, torch.full((1, 16, 16), 5.0)], 8, gen)
    assert len(sampler.images) == 6
    seen = {int(p[0, 0, 0]) for p in sampler(200)}
    assert seen == set(range(6))


def test_int_options_too_large_are_value_errors_not_overflow():
    from ts_defense import fit

    with pytest.raises(ValueError, match="steps") as err:
        fit(DnCNN(depth=3, features=4), torch.rand(1, 1, 16, 16), predicts="noise", steps=HUGE)
    one_line(err)


class LateNaN(nn.Module):
    """Finite at the first two calls (references, first step), NaN from then on."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, y):
        self.calls += 1
        return self.w * y * (1.0 if self.calls < 3 else math.nan)


def test_attacks_never_return_nan_and_misuse_is_named():
    from ts_defense.attacks import DenoisingPGD, L2DenoisingPGD

    x = torch.rand(2, 1, 8, 8)
    y = x + 0.1 * torch.randn_like(x)
    with pytest.raises(ValueError, match="not finite") as err:
        L2DenoisingPGD(Denoiser(LateNaN()), 0.1, steps=4)(y, x)
    one_line(err)
    with pytest.raises(ValueError, match="alpha"):
        DenoisingPGD(Denoiser(nn.Identity()), 0.1, alpha=3.5e38)
    conv = Denoiser(nn.Conv2d(1, 1, 3, padding=1))
    with pytest.raises(ValueError, match="loss .* must return a scalar"):
        DenoisingPGD(conv, 0.1, loss=lambda out, ref: (out - ref) ** 2)(y, x)
    with pytest.raises(ValueError, match="model: its output carries no gradient"):
        DenoisingPGD(Denoiser(lambda t: t.detach()), 0.1)(y, x)


# -- image files (issue 29.1): read as Pillow's own conversion reads them, or refused by name
def _colour(h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3)).astype("uint8")


def _rgba(a):
    alpha = (np.arange(a[..., 0].size).reshape(a.shape[:2]) % 256).astype(np.uint8)
    return Image.fromarray(np.dstack([a, alpha]))


CONVERTED = [  # (file, how it is made from RGB pixels, the mode Pillow converts it to)
    ("cmyk.jpg", lambda im: im.convert("CMYK"), "RGB"),  # was read with K dropped as alpha
    ("palette.png", lambda im: im.quantize(16), "RGB"),
    ("palette.gif", lambda im: im.quantize(7), "RGB"),
    ("grey_alpha.png", lambda im: im.convert("LA"), "L"),
    ("bilevel.png", lambda im: im.convert("1"), "L"),
    ("grey.tif", lambda im: im.convert("L"), "L"),
    ("colour.jpg", lambda im: im, "RGB"),
]


@pytest.mark.parametrize("name, make, mode", CONVERTED)
def test_images_are_read_through_the_mode_they_declare(tmp_path, name, make, mode):
    from ts_defense.data import read_image

    path = tmp_path / name
    make(Image.fromarray(_colour())).save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert(mode), dtype=np.float64) / 255
    got = read_image(path)[0].permute(1, 2, 0).numpy()
    assert got.shape == (12, 10, 3 if mode == "RGB" else 1)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-6)


def test_alpha_is_dropped_and_sixteen_bit_pixels_are_scaled_by_their_depth(tmp_path):
    from ts_defense.data import read_image

    a = _colour()
    _rgba(a).save(tmp_path / "rgba.png")
    np.testing.assert_allclose(read_image(tmp_path / "rgba.png")[0].permute(1, 2, 0), a / 255)
    deep = np.arange(120, dtype=np.uint16).reshape(12, 10) * 500
    for name in ("deep.png", "deep.tif"):
        Image.fromarray(deep).save(tmp_path / name)
        np.testing.assert_allclose(read_image(tmp_path / name)[0, 0], deep / 65535, rtol=1e-6)
    Image.fromarray(deep.astype(np.int32)).save(tmp_path / "int32.tif")  # mode I, in range
    np.testing.assert_allclose(read_image(tmp_path / "int32.tif")[0, 0], deep / 65535, rtol=1e-6)
    Image.fromarray(np.full((4, 4), -5, np.int32)).save(tmp_path / "negative.tif")
    with pytest.raises(ValueError, match=r"negative.tif: 32-bit integer pixels outside") as err:
        read_image(tmp_path / "negative.tif")
    one_line(err)


@pytest.mark.parametrize(
    "value, refused", [(0.25, False), (1.5, True), (-0.1, True), (math.nan, True)]
)
def test_float_images_outside_the_unit_range_are_refused_naming_the_file(tmp_path, value, refused):
    from ts_defense.data import read_image

    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels[3, 3] = value
    path = tmp_path / "float.tif"
    Image.fromarray(pixels).save(path)
    if not refused:
        assert torch.equal(read_image(path)[0, 0], torch.from_numpy(pixels))  # never clipped
        return
    with pytest.raises(ValueError, match=f"image file {path}: float pixels") as err:
        read_image(path)
    one_line(err)


@pytest.mark.parametrize("name", ["anim.png", "pages.tif", "anim.gif"])
def test_an_animation_gives_its_first_frame_and_a_warning(tmp_path, name):
    from ts_defense.data import read_image

    frames = [Image.fromarray(_colour(8, 8)[..., k]) for k in range(3)]  # never its channels
    path = tmp_path / name
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="animation of 3 frames: reading its first frame only"):
        image = read_image(path)
    assert image.shape[2:] == (8, 8) and image.shape[1] in (1, 3)  # GIF: a palette, read RGB
    for channel in image[0]:
        np.testing.assert_allclose(channel, np.asarray(frames[0]) / 255, atol=1e-6)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` grey pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def test_tiny_torn_and_huge_declared_images(tmp_path):
    from PIL import Image

    from ts_defense.data import read_image

    Image.new("L", (1, 1), 255).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").tolist() == [[[[1.0]]]]
    for (w, h), reason in (((64, 64), "truncated"), ((10**5, 10**5), "DecompressionBombError")):
        path = tmp_path / f"{w}.png"
        path.write_bytes(png_declaring(w, h))
        with pytest.raises(ValueError, match=reason) as err:
            read_image(path)
        assert one_line(err).startswith(f"cannot read image file {path}: ")
