"""The test suite: CPU, tiny inputs (README). A package, so that tests share fixtures by import."""
