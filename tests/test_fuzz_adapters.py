"""Fuzzing the adapters' option parsing (issue 7): random ``ts`` blocks and dataset options with
unknown keys, wrong types and sigma in the wrong units fail at start-up with the key's name."""

import numpy as np
import pytest
import torch
from fuzz_support import outcome, values
from hypothesis import given
from hypothesis import strategies as st
from ts_defense.adapters._options import GreySigma, grey_level, sampler_from_options

from ts_defense.noise.sampler import TSConfig

OPTION_NAMES = [*TSConfig.__dataclass_fields__, "sigma_type", "seed", "bogus", "sigma_range"]
grey = st.one_of(
    st.sampled_from([25, 0, 255, 256, 25 / 255, -5, [0, 50], [50, 0], [15, 25, 50], [], "25"]),
    values,
)
blocks = st.one_of(
    values,
    st.dictionaries(
        st.sampled_from(OPTION_NAMES),
        st.one_of(values, grey, st.sampled_from(["constant", "random", "choice"])),
        max_size=4,
    ).map(lambda d: d if "sigma" in d else {**d, "sigma": 25}),
)


@given(block=blocks, key=st.sampled_from(["ts", "datasets.train.ts"]))
def test_fuzz_sampler_from_options(block, key):
    def call():
        sampler, sigma = sampler_from_options(block, key)
        gen = sampler.generator("cpu")
        return sampler.draw(torch.rand(2, 1, 6, 6), sigma=sigma.draw(2, gen))

    draw = outcome("sampler_from_options", call, (key,))
    if draw is not None:
        assert draw.noisy.shape == (2, 1, 6, 6)
        assert (draw.sigma > 0).all() and (draw.sigma <= 1).all()  # grey levels became [0, 1]


@given(value=grey, sigma_type=st.one_of(st.none(), st.sampled_from(["constant", "random", "x"])))
def test_fuzz_grey_sigma(value, sigma_type):
    key = "datasets.train.sigma_range"
    call = lambda: GreySigma.parse(key, value, sigma_type)  # noqa: E731
    parsed = outcome("GreySigma.parse", call, ("datasets.train.sigma",))
    if parsed is not None:
        assert all(0 <= v <= 1 for v in parsed.values) and parsed.top > 0
    outcome("grey_level", lambda: grey_level("ts.sigma", value), ("ts.sigma",))


@pytest.fixture(scope="module")
def gt_folder(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("gt")
    img = (np.random.default_rng(0).random((20, 20, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "a.png"), img)
    return folder


DATASET_KEYS = ["sigma_type", "sigma_range", "sigma_test", "in_ch", "gt_size", "ts", "bogus"]


@given(
    phase=st.sampled_from(["train", "val"]),
    opts=st.dictionaries(st.sampled_from(DATASET_KEYS), st.one_of(values, grey), max_size=4),
)
def test_fuzz_basicsr_dataset_options(gt_folder, phase, opts):
    from ts_defense.adapters.basicsr import TSGaussianDenoisingDataset

    base = {"phase": phase, "dataroot_gt": str(gt_folder), "io_backend": {"type": "disk"}}
    base.update({"sigma_range": 25, "gt_size": 8, "sigma_test": 25} | opts)

    def call():
        return TSGaussianDenoisingDataset(base)[0]

    item = outcome("TSGaussianDenoisingDataset", call, (f"datasets.{phase}",))
    if item is not None:
        assert item["lq"].shape == item["gt"].shape and item["gt"].shape[0] in (1, 3)
