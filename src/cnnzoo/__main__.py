"""``python -m cnnzoo`` (also what ``torchrun -m cnnzoo train ...`` runs)."""

from cnnzoo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
