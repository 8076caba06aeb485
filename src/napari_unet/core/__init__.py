"""The GUI-free engine: imports neither napari nor Qt."""
