import gc

from pipeline import allocator
from pipeline.lazy import long_lived


def run() -> None:
    """`python -m stages` and the `vidstore` command (which `make` calls)."""
    # First, before torch is imported: ensure() may re-execute this command with the
    # allocator set, throwing away whatever was done so far.
    allocator.ensure()
    with long_lived():  # torch's import
        from .cli import main
    try:
        main()
    finally:
        gc.freeze()  # the interpreter's exit then walks none of it again


# The guard matters: Dask's LocalCluster and joblib's loky start worker processes that
# re-import the main module, and must not run the CLI again when they do.
if __name__ == "__main__":
    run()
