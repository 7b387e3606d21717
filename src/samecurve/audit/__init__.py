"""`samecurve audit`: point the tools the benchmark ranks best at a user's own model.

load (the model file, safely) -> data (the user's clean images) -> choose (the
best runnable tool per question, from a run's leaderboards) -> run (each tool
under its share of the budget) -> report (HTML, JSON, terminal). Importing this
package is cheap; the modules load torch when used."""

from __future__ import annotations


class AuditError(ValueError):
    """An audit that cannot start (bad model, data or options): one line that names
    the file and says what to do; the CLI prints it and exits with code 2."""


__all__ = ["AuditError"]
