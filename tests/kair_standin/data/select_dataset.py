def define_Dataset(dataset_opt):
    kind = dataset_opt["dataset_type"].lower()
    if kind == "dncnn":
        from data.dataset_dncnn import DatasetDnCNN as D
    elif kind == "ffdnet":
        from data.dataset_ffdnet import DatasetFFDNet as D
    elif kind == "fdncnn":
        from data.dataset_fdncnn import DatasetFDnCNN as D
    else:
        raise NotImplementedError(f"Dataset [{kind}] is not found.")
    return D(dataset_opt)
