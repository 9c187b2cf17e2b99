"""BERT4Rec and friends: honest sequential recommendation in PaddlePaddle."""
