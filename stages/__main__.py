from .cli import main

# The guard matters: Dask's LocalCluster and joblib's loky start worker processes that
# re-import the main module, and must not run the CLI again when they do.
if __name__ == "__main__":
    main()
