"""The images of the commands (app/audit/images.py): the tiles the audit scores on large images
(seeded, reproducible, inside the image; every tile with ``all``) and the one ``--images``
resolver behind evaluate, attack and transfer."""

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2gray

from ts_defense.app.audit.images import (
    Picture,
    choose_tiles,
    image_batches,
    resolve_images,
)
from ts_defense.data import bundled_images


def picture(name, h, w, channels=1):
    rng = np.random.default_rng(0)
    shape = (h, w) if channels == 1 else (h, w, 3)
    return Picture(name, rng.integers(0, 256, shape, dtype=np.uint8))


def test_random_tiles_are_seeded_distinct_and_inside_the_grid():
    pic = picture("photo.jpg", 1000, 700)
    tiles = choose_tiles(pic, tile=128, tiles=4, seed=0)
    assert tiles.count == 4 and tiles.size == (128, 128)
    assert len(set(tiles.corners)) == 4
    for top, left in tiles.corners:
        assert top % 128 == 0 and left % 128 == 0
        assert 0 <= top <= 1000 - 128 and 0 <= left <= 700 - 128
    assert choose_tiles(pic, 128, 4, 0) == tiles  # the same in every run
    draws = {choose_tiles(pic, 128, 4, seed).corners for seed in range(6)}
    assert len(draws) > 1  # the seed chooses
    renamed = {choose_tiles(picture(f"{k}.jpg", 1000, 700), 128, 4, 0).corners for k in range(6)}
    assert len(renamed) > 1  # each image draws its own (not the same corners for all)
    every = choose_tiles(pic, 128, "all", 0)
    assert every.count == (1000 // 128) * (700 // 128) and set(tiles.corners) <= set(every.corners)
    # the batches hold exactly those windows, in the picture's units
    ((_, batch),) = tiles.batches(4, 1)
    top, left = tiles.corners[2]
    expected = pic.pixels[top : top + 128, left : left + 128] / 255
    np.testing.assert_allclose(batch[2, 0].numpy(), expected, atol=1e-6)


def test_small_images_are_whole_and_few_tiles_are_all_scored():
    assert choose_tiles(picture("a", 100, 128), 128, 4, 0).corners == ((0, 0),)
    assert choose_tiles(picture("a", 100, 128), 128, 4, 0).size == (100, 128)
    assert choose_tiles(picture("a", 2000, 2000), 0, 4, 0).size == (2000, 2000)  # tile 0: whole
    four = choose_tiles(picture("a", 256, 300), 128, 4, 0)
    assert four.corners == ((0, 0), (0, 128), (128, 0), (128, 128))
    strip = choose_tiles(picture("a", 60, 1000), 128, "all", 0)  # a side shorter than a tile
    assert strip.size == (60, 128) and strip.count == 7


def test_batches_cover_the_tiles_in_order_and_convert_channels():
    pic = picture("c.png", 64, 96, channels=3)
    tiles = choose_tiles(pic, 32, "all", 0)
    parts = list(tiles.batches(4, 1))
    assert [first for first, _ in parts] == [0, 4]
    assert [len(x) for _, x in parts] == [4, 2] and parts[0][1].shape[1] == 1
    grey = rgb2gray(pic.pixels)  # what the grey readers of data.py give for a colour file
    np.testing.assert_allclose(parts[1][1][1, 0].numpy(), grey[32:, 64:], atol=1e-5)
    assert next(tiles.batches(1, 3))[1].shape == (1, 3, 32, 32)


def test_resolve_images_reads_every_kind_of_spec(tmp_path, shared_data):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    pics = resolve_images(str(tmp_path))
    assert [p.name for p in pics] == ["a.png", "b.png"]
    assert pics[0].pixels.dtype == np.uint8 and pics[1].channels == 3  # kept as decoded
    assert float(pics[0].image().max()) == 1.0 and pics[1].image().shape == (1, 3, 20, 30)
    bundled = resolve_images(None)
    assert len(bundled) == 8 and bundled[0].size == (64, 64)
    torch.testing.assert_close(bundled[1].image(), bundled_images(("moon",), 64))
    mixed = resolve_images(["camera", str(tmp_path / "a.png")], size=32)
    assert [p.name for p in mixed] == ["camera", "a.png"] and mixed[0].size == (32, 32)
    assert len(resolve_images("set12", shared_data)) == 12
    with pytest.raises(FileNotFoundError, match="neither a folder, an image file"):
        resolve_images(str(tmp_path / "nowhere"))
    short = tmp_path / "data" / "set12"
    short.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(short / "01.png")
    with pytest.raises(
        FileNotFoundError, match="expected 12 PNG, JPEG or TIFF images in .*, found 1"
    ):
        resolve_images("set12", tmp_path / "data")


def test_image_batches_for_attack_and_transfer_are_grey_crops_stacked_by_size(tmp_path):
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "c.png")
    batches = image_batches(["camera", "coins", str(tmp_path / "c.png")], size=16)
    assert [tuple(b.shape) for b in batches] == [(3, 1, 16, 16)]
    torch.testing.assert_close(batches[0][:2], bundled_images(("camera", "coins"), 16))
    kept = image_batches([str(tmp_path / "c.png"), "camera"], size=None)
    assert [tuple(b.shape) for b in kept] == [(1, 1, 40, 50), (1, 1, 256, 256)]
    with pytest.raises(ValueError, match="size"):
        image_batches(["camera"], size=-1)
