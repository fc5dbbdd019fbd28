def define_Model(opt):
    if opt["model"] == "plain":
        from models.model_plain import ModelPlain as M
    elif opt["model"] == "plain2":
        from models.model_plain2 import ModelPlain2 as M
    else:
        raise NotImplementedError(f"Model [{opt['model']}] is not defined.")
    return M(opt)
