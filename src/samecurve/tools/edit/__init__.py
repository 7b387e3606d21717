"""Edit tools: repairs that return a new model. Importing registers them."""

from samecurve.tools.edit import adversarial, finetune, pruning, unlearn

__all__ = ["adversarial", "finetune", "pruning", "unlearn"]
