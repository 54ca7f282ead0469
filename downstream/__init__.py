"""Downstream evaluation of pretrained encoders: MT-DNN-style fine-tuning (:mod:`downstream.finetune`: the run;
:mod:`downstream.config`, :mod:`downstream.encoding`, :mod:`downstream.multitask`, :mod:`downstream.loop`: its
config, data, model and loop), the benchmark readers (:mod:`downstream.benchmarks`: GLUE, wikiqp,
ChnSentiCorp, OCNLI, C3) and their metrics (:mod:`downstream.metrics`).

It builds on :mod:`ernie_cmtl` (encoder, training engine, config types, :func:`ernie_cmtl.pretrained.open_pretrained`)
and :mod:`data_builders` (corpus reader, tokenizer); :mod:`ernie_cmtl` imports it only inside ``api.finetune`` and
the CLI's ``finetune`` command, so pretraining never loads it. Nothing is imported here, so
``import downstream.metrics`` stays light.
"""
