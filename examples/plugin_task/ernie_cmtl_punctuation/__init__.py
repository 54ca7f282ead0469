"""Punctuation restoration, an example third-party ernie-cmtl pretraining task."""
