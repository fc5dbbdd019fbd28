"""Fuzzing the adapters' option parsing (issue 7): random ``ts`` blocks and dataset options with
unknown keys, wrong types and sigma in the wrong units fail at start-up with the key's name; option
files (issue 29) with repeated keys, deep nesting or misplaced ``ts`` blocks are refused in one
line by the reader and the checks both launchers share."""

import json

import numpy as np
import pytest
import torch
from fuzz_support import outcome, values
from hypothesis import given
from hypothesis import strategies as st
from ts_defense.adapters._launch import MAX_DEPTH, read_options
from ts_defense.adapters._options import grey_level, grey_sigma, sampler_from_options

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
        sampler = sampler_from_options(block, key)
        return sampler.draw(torch.rand(2, 1, 6, 6))

    draw = outcome("sampler_from_options", call, (key,))
    if draw is not None:
        assert draw.noisy.shape == (2, 1, 6, 6)
        assert (draw.sigma > 0).all() and (draw.sigma <= 1).all()  # grey levels became [0, 1]


@given(value=grey, sigma_type=st.one_of(st.none(), st.sampled_from(["constant", "random", "x"])))
def test_fuzz_grey_sigma(value, sigma_type):
    key = "datasets.train.sigma_range"
    call = lambda: grey_sigma(key, value, sigma_type)  # noqa: E731
    parsed = outcome("grey_sigma", call, ("datasets.train.sigma",))
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


# --- option files (issue 29): the one reader both launchers use -------------------------------

scalars = st.one_of(
    st.integers(-300, 300), st.booleans(), st.none(), st.text("abcxyz_", max_size=5)
)
keys = st.sampled_from(["ts", "sigma", "p_ood", "datasets", "train", "a", "b"])


def _pairs(children):
    """A mapping as its list of pairs: keys may repeat, as they can in a file."""
    return st.lists(st.tuples(keys, children), max_size=4).map(lambda p: ("map", p))


trees = st.recursive(
    scalars, lambda c: st.one_of(_pairs(c), st.lists(c, max_size=3).map(lambda v: ("list", v)))
)


def _text(tree) -> str:
    """The tree as JSON text (also YAML flow text), repeated keys written as they are."""
    if isinstance(tree, tuple) and tree[0] == "map":
        return "{" + ", ".join(f"{json.dumps(k)}: {_text(v)}" for k, v in tree[1]) + "}"
    if isinstance(tree, tuple):
        return "[" + ", ".join(map(_text, tree[1])) + "]"
    return json.dumps(tree)


def _facts(tree, depth=0) -> tuple[bool, int]:
    """(whether a key repeats anywhere, the depth of the deepest node)."""
    if not isinstance(tree, tuple):
        return False, depth
    items = [v for _, v in tree[1]] if tree[0] == "map" else tree[1]
    repeats = tree[0] == "map" and len({k for k, _ in tree[1]}) < len(tree[1])
    found = [_facts(v, depth + 1) for v in items]
    return repeats or any(r for r, _ in found), max([depth, *(d for _, d in found)])


@pytest.fixture(scope="module")
def option_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("options")


@given(
    body=_pairs(trees),
    nest=st.sampled_from([0, 1, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 5, 100_000]),
    kind=st.sampled_from(["json", "yaml"]),
    comment=st.booleans(),
)
def test_fuzz_option_files(option_dir, body, nest, kind, comment):
    """Repeated keys anywhere and nesting past MAX_DEPTH are refused naming the file; anything
    else reads back as the tree that was written (JSON with KAIR's // comments too)."""
    tree = ("map", [("name", ("list", [0])), *body[1]]) if nest else body
    text = _text(tree)
    if nest:  # the list under "name" nested `nest` levels deep
        text = text.replace("[0]", "[" * nest + "0" + "]" * nest, 1)
    if comment and kind == "json":
        text = "// a KAIR comment\n" + text.replace(", ", ", // note\n")
    path = option_dir / f"o.{kind}"
    path.write_text(text)
    repeats, depth = _facts(body)
    depth = max(depth, nest + 1 if nest else 0)  # "name": 0 inside `nest` lists
    opt = outcome("read_options", lambda: read_options(str(path), "--opt", kind), ("--opt",))
    if opt is None:
        return
    assert not repeats and depth <= MAX_DEPTH, (repeats, depth)
    expected = json.loads(text.replace("// a KAIR comment", "").replace("// note", ""))
    assert json.loads(json.dumps(opt)) == expected


placements = st.sampled_from(
    ["ts", "netG", "network_g", "train", "datasets.train", "datasets.test", "datasets.val", None]
)
ts_blocks = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"sigma": grey}, optional={"p_ood": st.one_of(values, st.floats(0, 1)), "bogus": values}
    ),
)


def _placed(opt: dict, where, block) -> dict:
    if where is None or block is None:
        return opt
    *parents, last = ["ts"] if where == "ts" else [*where.split("."), "ts"]
    node = opt
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = block
    return opt


def _one_line(check, opt):
    """``check(opt)``, its refusals asserted to be one line."""

    def call():
        try:
            check(opt)
        except (ValueError, TypeError) as err:
            assert "\n" not in str(err), str(err)
            raise

    return call


MISPLACED = ("netG", "network_g", "train")


@given(
    model=st.sampled_from(["ts_plain", "ts_plain2", "plain", None, 3]),
    dataset_type=st.sampled_from(["dncnn", "ts_dncnn", "ts_ffdnet", "ffdnet", None]),
    where=placements,
    block=ts_blocks,
    seed=st.one_of(st.none(), st.integers(-2, 3), st.text(max_size=2)),
)
def test_fuzz_kair_option_checks(model, dataset_type, where, block, seed):
    """The KAIR launcher's check: every refusal is one line naming an option; a ts block it
    lets through is one the chosen types read."""
    from ts_defense.adapters.kair import MODELS, check_options

    opt = {"model": model, "train": {"manual_seed": seed}, "netG": {"in_nc": 1}}
    opt["datasets"] = {p: {"dataset_type": dataset_type, "sigma": 25} for p in ("train", "test")}
    _placed(opt, where, block)
    names = ("ts", "datasets", "train.manual_seed", "netG")
    if outcome("kair check_options", _one_line(check_options, opt), names) is None:
        return
    if block is not None:
        assert where not in (*MISPLACED, "datasets.test", "datasets.val"), where
        assert where != "ts" or model in MODELS
        assert where != "datasets.train" or model not in MODELS and dataset_type.startswith("ts_")


@given(
    model_type=st.sampled_from(["TSModel", "SRModel", "NoSuchModel"]),
    dataset_type=st.sampled_from(["TSGaussianDenoisingDataset", "PairedImageDataset"]),
    where=placements,
    block=ts_blocks,
)
def test_fuzz_basicsr_option_checks(model_type, dataset_type, where, block):
    """The same for BasicSR's check (run by the launcher and by parse_options)."""
    from ts_defense.adapters.basicsr import check_ts_options

    datasets = {"train": {"type": dataset_type, "sigma_range": 25, "gt_size": 8}}
    opt = {"model_type": model_type, "datasets": {**datasets, "val": {"type": dataset_type}}}
    _placed(opt, where, block)
    names = ("ts", "datasets", "network_g", "netG", "train")
    if outcome("basicsr check_ts_options", _one_line(check_ts_options, opt), names) is None:
        return
    if block is not None:
        assert where not in (*MISPLACED, "datasets.test", "datasets.val"), where
        assert where != "ts" or model_type == "TSModel"
        assert where != "datasets.train" or model_type != "TSModel"
