import torch

from data.dataset_ffdnet import DatasetFFDNet


class DatasetFDnCNN(DatasetFFDNet):
    """Like FFDNet with the noise-level map concatenated to L as its last channel."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        level = item.pop("C").expand(1, *item["L"].shape[1:])
        item["L"] = torch.cat([item["L"], level], 0)
        return item
