"""Where optional real data lives on this machine (Debian's dataset-fashion-mnist)."""

import os

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
has_fmnist = os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz"))
