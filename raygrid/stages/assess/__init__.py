"""The assess stage: `assess`, a fidelity measure scored as an FR-IQA model."""
