"""Old path of :mod:`aseguide.training.evaluation`; ``python -m aseguide.evaluation`` runs its command line."""

from aseguide.training.evaluation import evaluate_model, load_held_out, main

__all__ = ["evaluate_model", "load_held_out", "main"]

if __name__ == "__main__":
    main()
