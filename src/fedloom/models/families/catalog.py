"""The families of HtFLlib's ``main.py`` (Zhang et al., "HtFLlib", KDD 2025) and FedTGP's HCNNs8 (Zhang et al.,
AAAI 2024), in their order (client i gets member i mod len)."""

from __future__ import annotations

from fedloom.models.families import family

HTFE8 = ("cnn", "googlenet", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
HTC4 = ("htc-512", "htc-512-512", "htc-512-256", "htc-512-128")

family("HtFE-img-2", ("cnn", "resnet18"), description="4-layer CNN, ResNet-18")
family("HtFE-img-3", ("resnet10", "resnet18", "resnet34"), description="ResNet-10/18/34")
family("HtFE-img-4", ("cnn", "googlenet", "mobilenet_v2", "resnet18"),
       description="CNN, GoogLeNet, MobileNetV2, ResNet-18")
family("HtFE-img-5", ("googlenet", "mobilenet_v2", "resnet18", "resnet34", "resnet50"),
       description="GoogLeNet, MobileNetV2, ResNet-18/34/50")
family("HtFE-img-8", HTFE8, description="CNN, GoogLeNet, MobileNetV2, ResNet-18/34/50/101/152 (FedTGP's HtFE8)")
family("HtFE-img-9", tuple(f"resnet{d}" for d in (4, 6, 8, 10, 18, 34, 50, 101, 152)),
       description="ResNet-4/6/8/10/18/34/50/101/152")
family("HtFE-img-8-HtC-img-4", HTFE8, HTC4, description="the HtFE-img-8 extractors with 4 heterogeneous heads")
family("Res34-HtC-img-4", ("resnet34",), HTC4, description="ResNet-34 with 4 heterogeneous heads")
family("HtM-img-10", HTFE8 + ("vit_b_16", "vit_b_32"),
       description="HtFE-img-8 and ViT-B/16, ViT-B/32 (FedKTL's HtM10); the ViTs' heads differ")
family("HCNNs8", ("hcnn1", "hcnn2", "hcnn1-512", "hcnn2-512", "hcnn1-1024", "hcnn2-1024", "hcnn1-1024-512",
                  "hcnn2-1024-512"),
       description="FedTGP's eight CNNs: 1 or 2 conv blocks, fc hidden widths [], [512], [1024], [1024, 512]")
family("HtFE-txt-2", ("fasttext", "text-logreg"), description="fastText, text logistic regression")
family("HtFE-txt-4", ("fasttext", "text-logreg", "lstm", "bilstm"),
       description="fastText, text logistic regression, LSTM, BiLSTM")
family("HtFE-txt-5-1", tuple(f"transformer-l{n}-h8" for n in (1, 2, 4, 8, 16)),
       description="Transformers with 1/2/4/8/16 layers, 8 heads")
family("HtFE-txt-5-2", tuple(f"transformer-l4-h{n}" for n in (1, 2, 4, 8, 16)),
       description="Transformers with 4 layers, 1/2/4/8/16 heads")
family("HtFE-txt-5-3", tuple(f"transformer-l{n}-h{n}" for n in (1, 2, 4, 8, 16)),
       description="Transformers with 1/2/4/8/16 layers and as many heads")
family("HtFE-txt-6", ("fasttext", "lstm", "bilstm", "transformer-l2-h8", "text-logreg", "gru"),
       description="fastText, LSTM, BiLSTM, 2-layer Transformer, text logistic regression, GRU")
family("MLPs", ("amazon-mlp", "amazon-mlp-500", "amazon-mlp-1000-500", "amazon-mlp-1000-500-200"),
       description="MLPs with hidden widths [], [500], [1000, 500], [1000, 500, 200] (then 100)")
family("MLP_1layer", ("amazon-mlp-200", "amazon-mlp-500"), description="MLPs with one hidden layer of 200 / 500")
family("MLP_layers", ("amazon-mlp-500", "amazon-mlp-1000-500", "amazon-mlp-1000-500-200"),
       description="MLPs with hidden widths [500], [1000, 500], [1000, 500, 200]")
