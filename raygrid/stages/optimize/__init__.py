"""The optimize stage: `sr_gan`, SwinIR trained with a fidelity loss and a discriminator."""
