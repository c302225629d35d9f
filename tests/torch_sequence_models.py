"""Sequence models for the torch tier, built by `edgekit convert --source torch_sequence_models:NAME`:
token ids (int32, fixed length 32) -> embedding -> LSTM / GRU / Transformer encoder -> 4 classes."""
import torch
from torch import nn


class Recurrent(nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.embed = nn.Embedding(1000, 32)
        self.rnn = cell(32, 64, batch_first=True)
        self.head = nn.Linear(64, 4)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return torch.softmax(self.head(out[:, -1]), dim=-1)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(1000, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2)
        self.head = nn.Linear(32, 4)

    def forward(self, tokens):
        return torch.softmax(self.head(self.encoder(self.embed(tokens)).mean(dim=1)), dim=-1)


def lstm():
    torch.manual_seed(0)
    return Recurrent(nn.LSTM).eval()


def gru():
    torch.manual_seed(0)
    return Recurrent(nn.GRU).eval()


def transformer():
    torch.manual_seed(0)
    return Encoder().eval()
