"""`python train.py [overrides]`: see gru_lightning/train.py and conf/train.yaml."""

from gru_lightning.train import main

if __name__ == "__main__":
    main()
