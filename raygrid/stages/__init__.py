"""The stages of the experiment, one package per trainable: `config` (its pydantic trial config),
`spec` (its torch-free TrainableSpec), `loop` (its Ray Train loop); `loop.py` here is the skeleton
the loops share and `config.py` the config pieces they share.

  assess     assess        a fidelity measure as an FR-IQA model
  optimize   sr_gan        SwinIR trained with a fidelity loss and a discriminator
  transfer   iqa_finetune  IQA models fine-tuned from ImageNet, a discriminator, or random init
"""
