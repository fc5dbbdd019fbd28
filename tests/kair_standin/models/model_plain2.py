from models.model_plain import ModelPlain


class ModelPlain2(ModelPlain):
    def feed_data(self, data, need_H=True):
        self.L = data["L"].to(self.device)
        self.C = data["C"].to(self.device)
        if need_H:
            self.H = data["H"].to(self.device)

    def netG_forward(self):
        self.E = self.netG(self.L, self.C)
