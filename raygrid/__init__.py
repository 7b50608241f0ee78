"""raygrid: perceptual-optimization vs assessment experiment grids on Ray Tune/Train + MLflow.

Importing the package is cheap on purpose (no torch): the dry run and search-space validation
must stay fast. Heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
