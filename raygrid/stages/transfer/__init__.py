"""The transfer stage: `iqa_finetune`, IQA models fine-tuned from ImageNet, a discriminator or random init."""
