"""The ranker: the C++ sources, its proto and the Python code generated from it."""
