from pipeline import allocator


def run() -> None:
    """`python -m stages` and the `vidstore` command (which `make` calls)."""
    # First, before torch is imported: ensure() may re-execute this command with the
    # allocator set, throwing away whatever was done so far.
    allocator.ensure()
    from .cli import main

    main()


# The guard matters: Dask's LocalCluster and joblib's loky start worker processes that
# re-import the main module, and must not run the CLI again when they do.
if __name__ == "__main__":
    run()
